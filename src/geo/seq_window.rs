//! Anti-replay window over client sequence numbers.

/// Remembers which sequence numbers a driver has already sent, so that a repeated `seq` (a phone
/// resending its buffer after a reconnect) is acknowledged and ignored, while fixes that arrive out
/// of order within the window are still accepted.
///
/// This is the sliding-window anti-replay check of IPsec ESP (RFC 4303 §3.4.3) with a 1,024-entry
/// window: anything more than 1,024 below the highest seq seen counts as already seen.
#[derive(Debug, Clone, Default)]
pub struct SeqWindow {
    /// Highest seq seen; `None` before the first one.
    highest: Option<u64>,
    /// Bit `i` set means `highest - i` was seen (bit 0 is `highest` itself).
    bits: [u64; Self::WORDS],
}

impl SeqWindow {
    const WORDS: usize = 16;
    /// Number of sequence numbers below the highest that are remembered individually.
    pub const SIZE: u64 = (Self::WORDS * 64) as u64;

    /// Records `seq`; returns `true` when it is new, `false` when it was seen before (or is too
    /// old to tell, i.e. more than [`Self::SIZE`] below the highest).
    pub fn insert(&mut self, seq: u64) -> bool {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            self.bits = [0; Self::WORDS];
            self.bits[0] = 1;
            return true;
        };
        if seq > highest {
            self.shift(seq - highest);
            self.highest = Some(seq);
            self.bits[0] |= 1;
            return true;
        }
        let age = highest - seq;
        if age >= Self::SIZE {
            return false;
        }
        let (word, bit) = ((age / 64) as usize, age % 64);
        let seen = self.bits[word] & (1 << bit) != 0;
        self.bits[word] |= 1 << bit;
        !seen
    }

    /// Forgets every seq and starts again at `seq`: the phone's counter restarted (a reinstall,
    /// cleared storage, or one frame with a wild seq that put the window far ahead). The caller
    /// decides that it did, from the fix's device time (see `Hub::ingest`).
    pub fn restart_at(&mut self, seq: u64) {
        *self = Self::default();
        self.insert(seq);
    }

    /// Highest seq seen so far, which is what an `ack` reports.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Shifts the window up by `by` positions (older entries move to higher bit indices).
    fn shift(&mut self, by: u64) {
        if by >= Self::SIZE {
            self.bits = [0; Self::WORDS];
            return;
        }
        let (words, bits) = ((by / 64) as usize, (by % 64) as u32);
        for i in (0..Self::WORDS).rev() {
            let src = i.checked_sub(words);
            let hi = src.map_or(0, |s| self.bits[s] << bits);
            let lo = match (src.and_then(|s| s.checked_sub(1)), bits) {
                (Some(s), b) if b > 0 => self.bits[s] >> (64 - b),
                _ => 0,
            };
            self.bits[i] = hi | lo;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_out_of_order() {
        let mut w = SeqWindow::default();
        assert!(w.insert(5));
        assert!(!w.insert(5));
        assert!(w.insert(7));
        assert!(w.insert(6), "out of order within the window is new");
        assert!(!w.insert(6));
        assert!(w.insert(1));
        assert_eq!(w.highest(), Some(7));
    }

    #[test]
    fn window_slides_across_word_boundaries() {
        let mut w = SeqWindow::default();
        for s in 0..3000 {
            assert!(w.insert(s));
        }
        for s in (3000 - SeqWindow::SIZE)..3000 {
            assert!(!w.insert(s), "seq {s} was seen");
        }
        assert!(!w.insert(10), "too old counts as seen");
        assert!(w.insert(5000));
        assert!(w.insert(4990));
        assert!(!w.insert(4990));
        assert!(!w.insert(2999), "more than the window below 5000");
    }

    #[test]
    fn restart_forgets_the_old_counter() {
        let mut w = SeqWindow::default();
        assert!(w.insert(u64::MAX - 1));
        assert!(!w.insert(1), "far below the window counts as seen");
        w.restart_at(1);
        assert_eq!(w.highest(), Some(1));
        assert!(!w.insert(1));
        assert!(w.insert(2));
    }
}
