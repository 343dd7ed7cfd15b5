//! The pre-roll ring: the last few hundred milliseconds of caller audio at the agent rate, kept
//! while nobody speaks so that an utterance reaches the agent with its first syllable (VAD onset
//! is always a little late).
//!
//! Real-time: no allocation after [`Preroll::new`].

/// A fixed-size overwrite-oldest ring of samples.
#[derive(Debug)]
pub struct Preroll {
    buf: Box<[i16]>,
    /// Index of the oldest sample.
    start: usize,
    len: usize,
}

impl Preroll {
    /// A ring holding `capacity` samples.
    pub fn new(capacity: usize) -> Self {
        Self {
            buf: vec![0; capacity].into_boxed_slice(),
            start: 0,
            len: 0,
        }
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `samples`, overwriting the oldest when full.
    pub fn push(&mut self, samples: &[i16]) {
        let cap = self.buf.len();
        if cap == 0 {
            return;
        }
        let samples = if samples.len() > cap {
            &samples[samples.len() - cap..]
        } else {
            samples
        };
        for &s in samples {
            let end = (self.start + self.len) % cap;
            self.buf[end] = s;
            if self.len == cap {
                self.start = (self.start + 1) % cap;
            } else {
                self.len += 1;
            }
        }
    }

    /// The held samples, oldest first, as at most two slices.
    pub fn as_slices(&self) -> (&[i16], &[i16]) {
        let cap = self.buf.len();
        if self.start + self.len <= cap {
            (&self.buf[self.start..self.start + self.len], &[])
        } else {
            (
                &self.buf[self.start..],
                &self.buf[..self.start + self.len - cap],
            )
        }
    }

    /// Empties the ring.
    pub fn clear(&mut self) {
        self.start = 0;
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_samples_in_order() {
        let mut p = Preroll::new(5);
        p.push(&[1, 2, 3]);
        assert_eq!(p.as_slices(), (&[1, 2, 3][..], &[][..]));
        p.push(&[4, 5, 6, 7]);
        let (a, b) = p.as_slices();
        assert_eq!([a, b].concat(), vec![3, 4, 5, 6, 7]);
        p.push(&[8, 9, 10, 11, 12, 13]);
        let (a, b) = p.as_slices();
        assert_eq!([a, b].concat(), vec![9, 10, 11, 12, 13]);
        p.clear();
        assert!(p.is_empty());
    }
}
