#![no_main]
//! CIFAR-10 binary batches (3,073-byte records: a label, then 3,072 pixels): images and
//! labels, or a typed error for a cut-off record or a label outside 0..=9.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = cpflow_fuzz::temp_file("cifar10", "data_batch_1.bin", data);
    if let Ok((images, labels)) = cpflow::datasets::read_cifar10_batch(&path) {
        assert_eq!(images.rows(), labels.len());
        assert_eq!(images.cols(), cpflow::datasets::CIFAR10_IMAGE_BYTES);
        assert!(labels.iter().all(|&l| l <= 9));
    }
});
