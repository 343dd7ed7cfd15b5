//! DTMF keys as Vonage reports them in `websocket:dtmf`.
//!
//! Real-time: no allocation.

use std::fmt;

/// One telephone key: `0`–`9`, `*` or `#` (and the rare `A`–`D` of the full DTMF matrix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DtmfDigit(u8);

impl DtmfDigit {
    /// Parses one key from its character.
    pub fn from_char(c: char) -> Option<Self> {
        match c {
            '0'..='9' | '*' | '#' | 'A'..='D' => Some(Self(c as u8)),
            'a'..='d' => Some(Self(c.to_ascii_uppercase() as u8)),
            _ => None,
        }
    }

    /// Parses a string of exactly one key.
    pub fn parse(s: &str) -> Option<Self> {
        let mut chars = s.chars();
        let c = chars.next()?;
        if chars.next().is_some() {
            return None;
        }
        Self::from_char(c)
    }

    /// The key as a character.
    pub fn as_char(self) -> char {
        self.0 as char
    }
}

impl fmt::Display for DtmfDigit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_char())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for k in ["0", "5", "9", "*", "#", "A"] {
            assert_eq!(DtmfDigit::parse(k).unwrap().to_string(), k);
        }
        for bad in ["", "55", "x", "E", " ", "٣"] {
            assert_eq!(DtmfDigit::parse(bad), None, "{bad:?}");
        }
    }
}
