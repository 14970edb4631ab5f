//! How much memory this process may use: the smallest of the machine's memory, its cgroup's
//! memory limit and its address-space limit (`ulimit -v`), and which of them it is. Reading
//! only the machine's memory let a run under a tighter limit pass the up-front checks and
//! abort later in an allocation ("memory allocation of N bytes failed", exit 134).

use std::fmt;
use std::path::{Component, Path};

use super::size_in_words;

/// Where a [`MemoryLimit`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LimitSource {
    /// The machine's memory (`MemTotal` of `/proc/meminfo`).
    Machine,
    /// cgroup v2: `memory.max` of the process's cgroup or of one of its ancestors.
    CgroupMemoryMax,
    /// cgroup v1: `memory.limit_in_bytes` of the process's memory cgroup or of one of its
    /// ancestors.
    CgroupLimitInBytes,
    /// The soft address-space limit (`ulimit -v`, `RLIMIT_AS`: "Max address space" of
    /// `/proc/self/limits`).
    AddressSpace,
}

/// The memory this process may use, in bytes, and the limit that sets it. Displayed as the
/// refusals say it: "this machine's 25.3 GB", "the 8.0 GB this process may use (its cgroup's
/// memory.max)".
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct MemoryLimit {
    /// Bytes the process may use.
    pub(crate) bytes: f64,
    /// The limit that sets them.
    pub(crate) source: LimitSource,
}

impl MemoryLimit {
    /// A machine of `bytes` bytes with no tighter limit.
    #[cfg(test)]
    pub(crate) fn machine(bytes: f64) -> Self {
        Self {
            bytes,
            source: LimitSource::Machine,
        }
    }
}

impl fmt::Display for MemoryLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = size_in_words(self.bytes);
        let why = match self.source {
            LimitSource::Machine => return write!(f, "this machine's {size}"),
            LimitSource::CgroupMemoryMax => "its cgroup's memory.max",
            LimitSource::CgroupLimitInBytes => "its cgroup's memory.limit_in_bytes",
            LimitSource::AddressSpace => "its address-space limit, ulimit -v",
        };
        write!(f, "the {size} this process may use ({why})")
    }
}

/// Limits of this many bytes or more mean "no limit": cgroup v1 writes
/// 9223372036854771712 (its largest page count in bytes) for an unset limit, and no machine
/// has an exbibyte (2⁶⁰ bytes).
const UNSET_FROM: u64 = 1 << 60;

/// The memory this process may use: the smallest of the machine's memory, its cgroup's
/// limit (v2 or v1, the process's cgroup and its ancestors) and its address-space limit that
/// is set; `None` where none can be read (not Linux).
pub(crate) fn memory_limit() -> Option<MemoryLimit> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let with = |source| move |bytes| MemoryLimit { bytes, source };
    let machine = read("/proc/meminfo")
        .as_deref()
        .and_then(mem_total)
        .map(with(LimitSource::Machine));
    let cgroups = read("/proc/self/cgroup").unwrap_or_default();
    // cgroup v2 is mounted at /sys/fs/cgroup, or at /sys/fs/cgroup/unified beside v1's
    // controllers (the "hybrid" layout).
    let v2_root = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(Path::new)
        .find(|root| root.join("cgroup.controllers").exists());
    let v2 = v2_root
        .zip(cgroup_v2_path(&cgroups))
        .and_then(|(root, path)| smallest_cgroup_limit(root, path, "memory.max"))
        .map(with(LimitSource::CgroupMemoryMax));
    let v1 = cgroup_v1_memory_path(&cgroups)
        .and_then(|path| {
            smallest_cgroup_limit(
                Path::new("/sys/fs/cgroup/memory"),
                path,
                "memory.limit_in_bytes",
            )
        })
        .map(with(LimitSource::CgroupLimitInBytes));
    let address_space = read("/proc/self/limits")
        .as_deref()
        .and_then(address_space_limit)
        .map(with(LimitSource::AddressSpace));
    smallest([machine, v2, v1, address_space].into_iter().flatten())
}

/// The smallest of `limits` (the first of equal ones).
fn smallest(limits: impl IntoIterator<Item = MemoryLimit>) -> Option<MemoryLimit> {
    limits
        .into_iter()
        .reduce(|a, b| if b.bytes < a.bytes { b } else { a })
}

/// `MemTotal` of `/proc/meminfo`'s text, in bytes.
fn mem_total(meminfo: &str) -> Option<f64> {
    let kb: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024.0)
}

/// The process's cgroup v2 path in `/proc/self/cgroup`'s text (its `0::/path` line).
fn cgroup_v2_path(cgroups: &str) -> Option<&str> {
    cgroups.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The process's cgroup v1 memory-controller path in `/proc/self/cgroup`'s text (the
/// `id:controllers:/path` line whose controllers include `memory`).
fn cgroup_v1_memory_path(cgroups: &str) -> Option<&str> {
    cgroups.lines().find_map(|l| {
        let mut fields = l.splitn(3, ':');
        let (_id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    })
}

/// A cgroup limit file's text in bytes: `None` for "max" (v2's "no limit"), for a value of
/// [`UNSET_FROM`] bytes or more (v1's "no limit") and for anything else that is not a number.
fn parse_cgroup_limit(text: &str) -> Option<f64> {
    let text = text.trim();
    if text == "max" {
        return None;
    }
    text.parse::<u64>()
        .ok()
        .filter(|&b| b < UNSET_FROM)
        .map(|b| b as f64)
}

/// The soft "Max address space" of `/proc/self/limits`' text in bytes (`None`: unlimited).
/// Its line reads `Max address space  <soft> <hard> bytes`; the soft limit is the one that
/// fails allocations.
fn address_space_limit(limits: &str) -> Option<f64> {
    let soft = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max address space"))?
        .split_whitespace()
        .next()?;
    soft.parse::<u64>()
        .ok()
        .filter(|&b| b < UNSET_FROM)
        .map(|b| b as f64)
}

/// The smallest limit set in `file` of the cgroup at `path` (as `/proc/self/cgroup` gives
/// it) under the hierarchy mounted at `root`, and of its ancestors up to `root` itself (a
/// parent's limit binds its children; a path that this mount does not show, as inside a
/// container, still finds the limits of the ancestors it does show). `None`: none set.
fn smallest_cgroup_limit(root: &Path, path: &str, file: &str) -> Option<f64> {
    Path::new(path)
        .ancestors()
        .filter(|a| {
            a.components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        })
        .filter_map(|a| {
            let dir = root.join(a.strip_prefix("/").unwrap_or(a));
            std::fs::read_to_string(dir.join(file)).ok()
        })
        .filter_map(|text| parse_cgroup_limit(&text))
        .reduce(f64::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_memory_is_mem_total_in_bytes() {
        let meminfo = "MemTotal:       24701020 kB\nMemFree:         1234 kB\n";
        assert_eq!(mem_total(meminfo), Some(24_701_020.0 * 1024.0));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
    }

    /// v2's `0::` line, not a v1 line; v1's memory line among others and with another
    /// controller mounted beside it.
    #[test]
    fn cgroup_paths_are_read_from_proc_self_cgroup() {
        let hybrid = "9:name=systemd:/\n4:memory:/process_api/5b44\n3:cpu,cpuacct:/x\n0::/\n";
        assert_eq!(cgroup_v2_path(hybrid), Some("/"));
        assert_eq!(cgroup_v1_memory_path(hybrid), Some("/process_api/5b44"));
        let v2 = "0::/user.slice/user-1000.slice/session-3.scope\n";
        assert_eq!(
            cgroup_v2_path(v2),
            Some("/user.slice/user-1000.slice/session-3.scope")
        );
        assert_eq!(cgroup_v1_memory_path(v2), None);
        assert_eq!(
            cgroup_v1_memory_path("5:memory,hugetlb:/docker/ab\n"),
            Some("/docker/ab")
        );
        // "memory" must be a controller of its own, not part of another name.
        assert_eq!(cgroup_v1_memory_path("5:name=memoryless:/a\n"), None);
    }

    #[test]
    fn cgroup_limits_unset_are_none() {
        assert_eq!(parse_cgroup_limit("8589934592\n"), Some(8589934592.0));
        assert_eq!(parse_cgroup_limit("max\n"), None);
        // cgroup v1's "no limit".
        assert_eq!(parse_cgroup_limit("9223372036854771712\n"), None);
        assert_eq!(parse_cgroup_limit(""), None);
    }

    #[test]
    fn address_space_limit_is_the_soft_limit() {
        let line = |soft: &str, hard: &str| {
            format!(
                "Limit                     Soft Limit           Hard Limit           Units     \n\
                 Max stack size            8388608              unlimited            bytes     \n\
                 Max address space         {soft:<20} {hard:<20} bytes     \n\
                 Max file locks            unlimited            unlimited            locks     \n"
            )
        };
        assert_eq!(address_space_limit(&line("unlimited", "unlimited")), None);
        assert_eq!(
            address_space_limit(&line("4096000000", "unlimited")),
            Some(4_096_000_000.0)
        );
        assert_eq!(
            address_space_limit(&line("4096000000", "8192000000")),
            Some(4_096_000_000.0)
        );
        assert_eq!(
            address_space_limit("Max stack size 8388608 unlimited bytes\n"),
            None
        );
    }

    /// A nested v2 cgroup whose own limit is unset is bound by its parent's; the smallest of
    /// the chain counts; a path this mount does not show finds the limits above it.
    #[test]
    fn the_smallest_limit_of_a_cgroup_and_its_ancestors_counts() {
        let root = std::env::temp_dir().join(format!("cpflow-cgroup-{}", std::process::id()));
        let write = |dir: &str, text: &str| {
            let dir = root.join(dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("memory.max"), text).unwrap();
        };
        write("", "max\n");
        write("a", "8000000000\n");
        write("a/b", "12000000000\n");
        write("a/b/c", "max\n");
        let limit = |path| smallest_cgroup_limit(&root, path, "memory.max");
        assert_eq!(limit("/a/b/c"), Some(8e9));
        assert_eq!(limit("/a/b/c/not-mounted-here"), Some(8e9));
        assert_eq!(limit("/"), None);
        write("a/b/c", "2000000000\n");
        assert_eq!(limit("/a/b/c"), Some(2e9));
        // `..` never leaves the mount: only the root's own limit counts.
        write("", "16000000000\n");
        assert_eq!(limit("/../.."), Some(16e9));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_smallest_set_limit_is_named() {
        let limit = |bytes, source| MemoryLimit { bytes, source };
        let machine = limit(25.3e9, LimitSource::Machine);
        let cgroup = limit(8e9, LimitSource::CgroupMemoryMax);
        let ulimit = limit(4.096e9, LimitSource::AddressSpace);
        assert_eq!(smallest([machine, cgroup, ulimit]), Some(ulimit));
        assert_eq!(smallest([ulimit, machine, cgroup]), Some(ulimit));
        assert_eq!(smallest([machine, cgroup]), Some(cgroup));
        assert_eq!(smallest([machine]), Some(machine));
        assert_eq!(smallest([]), None);
        assert_eq!(machine.to_string(), "this machine's 25.3 GB");
        assert_eq!(
            cgroup.to_string(),
            "the 8.0 GB this process may use (its cgroup's memory.max)"
        );
        assert_eq!(
            limit(8e9, LimitSource::CgroupLimitInBytes).to_string(),
            "the 8.0 GB this process may use (its cgroup's memory.limit_in_bytes)"
        );
        assert_eq!(
            ulimit.to_string(),
            "the 4.1 GB this process may use (its address-space limit, ulimit -v)"
        );
    }

    /// This process: some limit is known on Linux, and none exceeds the machine's memory.
    #[test]
    fn this_process_has_a_limit_no_larger_than_the_machine() {
        let Some(machine) = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .as_deref()
            .and_then(mem_total)
        else {
            return;
        };
        let limit = memory_limit().unwrap();
        assert!(limit.bytes > 1e8 && limit.bytes <= machine, "{limit:?}");
    }
}
