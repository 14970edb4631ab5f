#![no_main]
//! The Berkeley images archive (`BSDS300-images.tgz`, gzipped tar of JPEGs) and the patches
//! drawn from it: patches or a typed error.
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;

fuzz_target!(|data: &[u8]| {
    let path = cpflow_fuzz::temp_file("bsds300", "BSDS300-images.tgz", data);
    if let Ok(images) = cpflow::datasets::read_images_archive(&path, Some(4), Some(4)) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let _ = cpflow::datasets::sample_patches(&images.train, 10, &mut rng);
    }
});
