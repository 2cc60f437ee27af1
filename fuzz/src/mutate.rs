//! A small deterministic mutator (xorshift64*, no dependency): what libFuzzer does to a
//! corpus, in miniature, so the targets run under stable `cargo test` with a fixed budget.

/// A deterministic generator of mutated inputs from seeds.
pub struct Mutator {
    state: u64,
}

/// Values that sit on boundaries of lengths and counts.
const INTERESTING: [u32; 10] = [0, 1, 3, 4, 16, 20, 0x7f, 0xff, 0xffff, 0xffff_ffff];

impl Mutator {
    /// A generator seeded with `seed` (any value; 0 is replaced).
    pub fn new(seed: u64) -> Self {
        Self { state: seed.max(1) }
    }

    fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    /// A mutation of one of `seeds`: one to four edits (bit flip, byte set, boundary value
    /// written as u16/u32, cut, insert, duplicated chunk, splice with another seed).
    pub fn mutate(&mut self, seeds: &[Vec<u8>]) -> Vec<u8> {
        let mut data = seeds[self.below(seeds.len())].clone();
        for _ in 0..=self.below(4) {
            let len = data.len();
            match self.below(8) {
                0 if len > 0 => {
                    let at = self.below(len);
                    data[at] ^= 1 << self.below(8);
                }
                1 if len > 0 => {
                    let at = self.below(len);
                    data[at] = self.next() as u8;
                }
                2 if len >= 4 => {
                    let at = self.below(len - 3);
                    let v = INTERESTING[self.below(INTERESTING.len())];
                    data[at..at + 4].copy_from_slice(&v.to_ne_bytes());
                }
                3 if len >= 2 => {
                    let at = self.below(len - 1);
                    let v = INTERESTING[self.below(INTERESTING.len())] as u16;
                    data[at..at + 2].copy_from_slice(&v.to_ne_bytes());
                }
                4 => data.truncate(self.below(len + 1)),
                5 => {
                    let at = self.below(len + 1);
                    let extra: Vec<u8> = (0..self.below(16)).map(|_| self.next() as u8).collect();
                    data.splice(at..at, extra);
                }
                6 if len > 0 => {
                    let from = self.below(len);
                    let to = from + self.below(len - from) + 1;
                    let chunk = data[from..to].to_vec();
                    let at = self.below(len + 1);
                    data.splice(at..at, chunk);
                }
                _ => {
                    let other = &seeds[self.below(seeds.len())];
                    let cut = self.below(len + 1);
                    let from = self.below(other.len() + 1);
                    data.truncate(cut);
                    data.extend_from_slice(&other[from..]);
                }
            }
        }
        data
    }
}
