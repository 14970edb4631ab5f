//! The operation graph a GPU runs, checked on the CPU: every device test (`device_*`, the
//! reference parity tests) run again in a child process of this test binary with the host
//! kernels off ([`icnn::HOST_KERNELS_ENV`]` = off`), so CPU tensors take the candle
//! operations that CUDA tensors take (the composed ICNN recursions, candle's matmul and
//! convolutions, krylov's tensor path, sequential row chunks). What this cannot check is
//! candle's CUDA kernels themselves: that needs the GPU run (`benchmarks/gpu/run.sh`).

use std::process::Command;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use icnn::{ActivationKind, ConvexPotential, Icnn2, Icnn2Config};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// The switch reaches the library: an initialised `Icnn2` on the CPU offers host weights
/// exactly when the host kernels are on (in the child run below they are off, so this test
/// there proves the composed path is the one taken).
#[test]
fn device_switch_host_kernels_follow_the_environment() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let config = Icnn2Config {
        dim: 3,
        width: 4,
        depth: 2,
        activation: ActivationKind::Softplus,
        zero_shift: false,
        symm_act_first: false,
    };
    let net = Icnn2::new(vb, &config, &mut StdRng::seed_from_u64(0)).unwrap();
    let x = Tensor::new(
        &[[0.1f64, 0.2, 0.3], [0.4, -0.5, 0.6], [1.0, 0.0, -1.0]],
        &Device::Cpu,
    )
    .unwrap();
    net.potential(&x).unwrap(); // initialises the ActNorms from data
    let off = std::env::var(icnn::HOST_KERNELS_ENV).as_deref() == Ok("off");
    assert_eq!(icnn::host_kernels_enabled(), !off);
    assert_eq!(net.host_weights().unwrap().is_some(), !off);
    assert_eq!(net.host_linearize(&x).unwrap().is_some(), !off);
}

#[test]
fn device_tests_pass_on_the_composed_path() {
    if std::env::var(icnn::HOST_KERNELS_ENV).as_deref() == Ok("off") {
        return; // already the child (the filters below skip this test anyway)
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .env(icnn::HOST_KERNELS_ENV, "off")
        .args([
            "device_",
            "reference_parity",
            "--skip",
            "device_tests_pass_on_the_composed_path",
        ])
        .args(["--test-threads", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "device tests failed on the composed path:\n{stdout}\n{stderr}"
    );
    // The child must have run the tests, not filtered them all out: every device test
    // body's CPU variant and the switch test above.
    let passed: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("test result: ok. "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        passed >= 30,
        "only {passed} tests ran on the composed path:\n{stdout}"
    );
    assert!(
        stdout.contains("device_switch_host_kernels_follow_the_environment ... ok"),
        "{stdout}"
    );
}

/// GPU runs select the device tests' variants by the substrings `_cuda` and `_cpu`
/// (`benchmarks/gpu/run.sh`), so those may only appear as the macro's suffix: a body named
/// `…_cpu_…` would put its CUDA variant in a CPU run (seen: `device_flow_equals_cpu_flow_cuda`).
#[test]
fn device_test_names_carry_the_device_only_as_suffix() {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe).arg("--list").output().unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = list
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .collect();
    assert!(names.len() > 100, "{list}");
    for name in &names {
        let last = name.rsplit("::").next().unwrap_or(name);
        for tag in ["_cpu", "_cuda"] {
            if let Some(at) = last.find(tag) {
                assert_eq!(
                    at + tag.len(),
                    last.len(),
                    "{name}: `{tag}` inside the name"
                );
            }
        }
    }
}
