//! Property tests of the `.bin` batch parser: random and mutated inputs give an error or a
//! valid result, never a panic, and a result always accounts for every byte of the input.

use std::path::Path;

use cifar_data::synthetic::{encode_batch, generate};
use cifar_data::{parse_batch, NUM_CLASSES, RECORD_BYTES};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Arbitrary bytes, with or without an expected record count.
    #[test]
    fn random_bytes_parse_or_fail_cleanly(
        bytes in proptest::collection::vec(any::<u8>(), 0..3 * RECORD_BYTES + 7),
        records in proptest::option::of(0usize..5),
    ) {
        match parse_batch(&bytes, Path::new("random.bin"), records) {
            Ok(set) => {
                prop_assert_eq!(set.len() * RECORD_BYTES, bytes.len());
                if let Some(n) = records {
                    prop_assert_eq!(set.len(), n);
                }
                prop_assert!(set.labels().iter().all(|&l| usize::from(l) < NUM_CLASSES));
            }
            Err(e) => prop_assert!(e.to_string().contains("random.bin"), "{}", e),
        }
    }

    /// A valid batch with bytes overwritten and its length cut or extended.
    #[test]
    fn mutated_batches_parse_or_fail_cleanly(
        seed in 0u64..1000,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in 0usize..RECORD_BYTES + 2,
        extend in 0usize..3,
    ) {
        let mut bytes = encode_batch(&generate(3, seed));
        for (at, v) in edits {
            let i = at % bytes.len();
            bytes[i] = v;
        }
        bytes.truncate(bytes.len().saturating_sub(cut));
        bytes.extend(std::iter::repeat_n(0u8, extend));
        let expect_ok = bytes.len().is_multiple_of(RECORD_BYTES)
            && !bytes.is_empty()
            && bytes
                .chunks_exact(RECORD_BYTES)
                .all(|r| usize::from(r[0]) < NUM_CLASSES);
        let got = parse_batch(&bytes, Path::new("mutated.bin"), None);
        prop_assert_eq!(got.is_ok(), expect_ok, "{:?}", got.err().map(|e| e.to_string()));
        if let Ok(set) = got {
            prop_assert_eq!(set.len() * RECORD_BYTES, bytes.len());
        }
    }
}
