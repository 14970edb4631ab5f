//! Training does not depend on the thread count: a tiny image run and a tiny VAE run with
//! `RAYON_NUM_THREADS=1` and `=3` write byte-identical model files. (The kernel gradients of
//! the convolutions used to split the batch into one partial sum per thread: the weights
//! differed in their last bits after two image steps, everywhere after a VAE epoch.)

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::cli_common::{shared_data, temp_dir};

/// Starts `cpflow args… --out dir/run-<threads>` on `threads` rayon threads (candle's
/// element-wise ops on the calling thread, as the tests' default); returns the run
/// directory and the process.
fn start_on(threads: usize, dir: &Path, args: &[&str]) -> (PathBuf, Child) {
    let run = dir.join(format!("run-{threads}"));
    let child = Command::new(env!("CARGO_BIN_EXE_cpflow"))
        .args(args)
        .args(["--out", run.to_str().unwrap(), "--no-progress"])
        .env("RAYON_NUM_THREADS", threads.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (run, child)
}

/// Waits for a run of [`start_on`], asserting its success.
fn finish(child: Child, what: &str) {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `config` to a file and trains `command --config file` on 1 and on 3 threads;
/// asserts that `file` of the two runs has the same bytes.
fn same_file_on_1_and_3_threads(name: &str, command: &str, config: &str, file: &str) {
    let dir = temp_dir(name);
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    let args = [command, "--config", path.to_str().unwrap()];
    // Both at once: the VAE's epoch takes ~10 s in the dev profile (its 256-way output
    // over 1,965 images), the image run ~1 s.
    let ((one, c1), (three, c3)) = (start_on(1, &dir, &args), start_on(3, &dir, &args));
    finish(c1, &format!("cpflow {args:?} on 1 thread"));
    finish(c3, &format!("cpflow {args:?} on 3 threads"));
    let (a, b) = (
        std::fs::read(one.join(file)).unwrap(),
        std::fs::read(three.join(file)).unwrap(),
    );
    let first = a.iter().zip(&b).position(|(x, y)| x != y);
    assert!(
        a.len() == b.len() && first.is_none(),
        "{file} on 1 and 3 threads: {} and {} bytes, first difference at byte {first:?}",
        a.len(),
        b.len()
    );
}

/// Two steps of batch 8 on 16 MNIST images: a ConvICNN of width 32 in f32, so its hidden
/// 3×3 layers take the channel-last Winograd kernels and its first layer (one input channel)
/// the shifted products; no validation during training, the smallest test score.
#[test]
fn image_training_writes_the_same_model_on_1_and_3_threads() {
    let config = format!(
        "[data]\ndataset = \"mnist\"\nroot = {:?}\nn_val = 4\nn_train = 16\n\
         [model]\nwidth = 32\ndepth = 2\nnblocks = [1]\nfloat = \"f32\"\n\
         [train]\nmax_iterations = 2\nbatch_size = 8\neval_batch_size = 4\nseed = 3\n\
         val_every = 0\ntest = {{ images = 2, exact_images = 0, slq = {{ probes = 1, steps = 4 }} }}\n",
        shared_data()
    );
    same_file_on_1_and_3_threads("thread-count-image", "train", &config, "model.safetensors");
}

/// One epoch (3 steps of batch 100, the first 300 training images) of a tiny VAE on Frey
/// Faces: a CP-Flow posterior on a 2-D latent, 2-channel f32 networks (the im2col kernels,
/// as `configs/vae-frey-cpu.toml`'s f32 networks); importance sampling with 2 samples on 2
/// test images.
#[test]
fn vae_training_writes_the_same_best_weights_on_1_and_3_threads() {
    let config = format!(
        "[data]\ndataset = \"frey-faces\"\nroot = {:?}\nn_train = 300\n\
         [model]\nposterior = \"cp-flow\"\nlatent_dim = 2\nblocks = 1\nwidth = 4\ndepth = 2\n\
         network_float = \"f32\"\n\
         architecture = {{ channels = 2, feature_dim = 4, head_channels = 4 }}\n\
         [train]\nepochs = 1\nbatch_size = 100\n\
         [eval]\nis_samples = 2\nis_chunk = 2\nis_images = 2\n",
        shared_data()
    );
    same_file_on_1_and_3_threads("thread-count-vae", "vae", &config, "best.safetensors");
}
