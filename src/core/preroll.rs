//! The pre-roll ring: the last few hundred milliseconds of caller audio at the call rate, kept
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
        // Two block copies (the write position, then the wrap to the front); a sample at a time
        // with a modulo each was a division per sample (0.3–0.5 µs of the inbound frame).
        let end = (self.start + self.len) % cap;
        let first = samples.len().min(cap - end);
        self.buf[end..end + first].copy_from_slice(&samples[..first]);
        self.buf[..samples.len() - first].copy_from_slice(&samples[first..]);
        let overwritten = (self.len + samples.len()).saturating_sub(cap);
        self.len = (self.len + samples.len()).min(cap);
        self.start = (self.start + overwritten) % cap;
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

    proptest::proptest! {
        #[test]
        fn matches_a_plain_fifo_that_keeps_the_newest(
            cap in 0usize..40,
            pushes in proptest::collection::vec(proptest::collection::vec(proptest::num::i16::ANY, 0..90), 0..30),
        ) {
            let mut p = Preroll::new(cap);
            let mut model = std::collections::VecDeque::new();
            for samples in &pushes {
                p.push(samples);
                model.extend(samples.iter().copied());
                while model.len() > cap {
                    model.pop_front();
                }
                let (a, b) = p.as_slices();
                proptest::prop_assert_eq!([a, b].concat(), Vec::from(model.clone()));
                proptest::prop_assert_eq!(p.len(), model.len());
            }
        }
    }
}
