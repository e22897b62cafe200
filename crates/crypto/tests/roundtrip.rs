//! Property tests: every size round-trips, fed in any chunking.

mod common;

use common::*;
use proptest::prelude::*;

const SEG: u32 = 256;

fn sizes() -> impl Strategy<Value = usize> {
    let s = SEG as usize;
    prop_oneof![
        Just(0usize),
        Just(1),
        Just(s - 1),
        Just(s),
        Just(s + 1),
        Just(2 * s),
        Just(3 * s - 1),
        0usize..(8 * s),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trips(size in sizes(), seed in any::<u8>(), chunk in 1usize..1000) {
        let pt: Vec<u8> = (0..size).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let s = seal(&pt, SEG);
        let out = open_blob(&s.blob, &s.ring, &s.wrapped, &s.ctx, chunk).unwrap();
        prop_assert_eq!(out, pt);
    }

    #[test]
    fn any_single_byte_change_is_caught(size in 1usize..(4 * SEG as usize), pos_seed in any::<usize>(), delta in 1u8..=255) {
        let pt = vec![0x5a; size];
        let s = seal(&pt, SEG);
        let mut b = s.blob.clone();
        let pos = pos_seed % b.len();
        b[pos] ^= delta;
        prop_assert!(s.open(&b).is_err());
    }
}
