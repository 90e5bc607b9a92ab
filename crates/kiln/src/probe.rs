//! What this machine can run: the backends compiled into this binary, what each finds here
//! (libraries, Vulkan drivers, NVIDIA devices), and, for each that cannot run, why, in words a
//! user can act on. The findings come from files and environment variables only; nothing is
//! initialised, so probing never hangs or crashes on a broken driver.

use std::path::{Path, PathBuf};

/// Facts about the host that decide which backends can run.
#[derive(Debug, Clone, Default)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "each flag is one independent fact read off the machine"
)]
pub(crate) struct Host {
    /// CPU cores.
    pub(crate) cores: usize,
    /// Vulkan driver manifests (ICD JSON files) found, by file name.
    pub(crate) vulkan_icds: Vec<String>,
    /// Whether `libvulkan.so.1` (the Vulkan loader) was found.
    pub(crate) vulkan_loader: bool,
    /// Whether an NVIDIA device node (`/dev/nvidia0`) exists.
    pub(crate) nvidia_device: bool,
    /// Whether a DRM render node (`/dev/dri/renderD*`) exists: Mesa's hardware Vulkan drivers
    /// reach their GPU through one.
    pub(crate) drm_render_node: bool,
    /// The NVIDIA kernel driver's version line, if any.
    pub(crate) nvidia_driver: Option<String>,
    /// `NVIDIA_DRIVER_CAPABILITIES`, as a container runtime sets it.
    pub(crate) nvidia_capabilities: Option<String>,
    /// Whether `libcuda.so.1` (from the driver) was found.
    pub(crate) libcuda: bool,
    /// The NVRTC library found (`libnvrtc.so.12`, ...), if any.
    pub(crate) libnvrtc: Option<String>,
    /// Whether `cuda.h` was found under `CUDA_PATH` or `/usr/local/cuda`.
    pub(crate) cuda_headers: bool,
}

/// Whether a backend can run here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    /// It should run; what was found.
    Ready(String),
    /// It runs on a software renderer: correct, but slow.
    Software(String),
    /// Compiled in, but something it needs is missing: what, and what to do.
    Unavailable(String),
    /// Not compiled into this binary: how to get it.
    NotCompiled(String),
}

/// One backend's verdict.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    /// The `--device` name.
    pub(crate) device: &'static str,
    /// Its status here.
    pub(crate) status: Status,
}

/// The backends compiled into this binary.
pub(crate) fn compiled() -> Vec<&'static str> {
    [
        ("cpu", cfg!(feature = "flex")),
        ("ndarray", cfg!(feature = "ndarray")),
        ("wgpu", cfg!(feature = "wgpu")),
        ("vulkan", cfg!(feature = "vulkan")),
        ("cuda", cfg!(feature = "cuda")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect()
}

impl Host {
    /// Reads the facts off this machine.
    pub(crate) fn detect() -> Self {
        let cuda_root = std::env::var_os("CUDA_PATH")
            .map_or_else(|| PathBuf::from("/usr/local/cuda"), PathBuf::from);
        let mut lib_dirs: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        lib_dirs.extend(
            [
                "/usr/lib/x86_64-linux-gnu",
                "/usr/lib/aarch64-linux-gnu",
                "/usr/lib64",
                "/usr/lib",
                "/lib/x86_64-linux-gnu",
                "/usr/local/nvidia/lib64",
            ]
            .map(PathBuf::from),
        );
        lib_dirs.push(cuda_root.join("lib64"));
        lib_dirs.push(cuda_root.join("targets/x86_64-linux/lib"));
        let find = |prefix: &str| first_file(&lib_dirs, prefix);
        Self {
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            vulkan_icds: vulkan_icds(),
            vulkan_loader: find("libvulkan.so.1").is_some(),
            nvidia_device: Path::new("/dev/nvidia0").exists(),
            drm_render_node: std::fs::read_dir("/dev/dri").is_ok_and(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("renderD"))
            }),
            nvidia_driver: std::fs::read_to_string("/proc/driver/nvidia/version")
                .ok()
                .and_then(|v| v.lines().next().map(str::to_string)),
            nvidia_capabilities: std::env::var("NVIDIA_DRIVER_CAPABILITIES").ok(),
            libcuda: find("libcuda.so.1").is_some(),
            libnvrtc: find("libnvrtc.so."),
            cuda_headers: cuda_root.join("include/cuda.h").is_file(),
        }
    }
}

/// The first file in `dirs` whose name starts with `prefix` (its name).
fn first_file(dirs: &[PathBuf], prefix: &str) -> Option<String> {
    dirs.iter().find_map(|dir| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort();
        names.into_iter().next()
    })
}

/// Vulkan driver manifests, from `VK_DRIVER_FILES` / `VK_ICD_FILENAMES` or the loader's
/// standard directories.
fn vulkan_icds() -> Vec<String> {
    let from_env = ["VK_DRIVER_FILES", "VK_ICD_FILENAMES"]
        .iter()
        .find_map(std::env::var_os);
    let files: Vec<PathBuf> = match from_env {
        Some(list) => std::env::split_paths(&list).collect(),
        None => [
            "/usr/share/vulkan/icd.d",
            "/etc/vulkan/icd.d",
            "/usr/local/share/vulkan/icd.d",
        ]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|entries| entries.filter_map(Result::ok).map(|e| e.path()))
        .collect(),
    };
    let mut names: Vec<String> = files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json") && p.is_file())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Every backend's status on `host`, given the backends `compiled` into the binary.
pub(crate) fn probe(host: &Host, compiled: &[&str]) -> Vec<Probe> {
    let has = |name: &str| compiled.contains(&name);
    let not_compiled = |feature: &str| {
        Status::NotCompiled(format!(
            "not built into this kiln: rebuild with `cargo build --release --features {feature}`"
        ))
    };
    let gpu = |name: &'static str| Probe {
        device: name,
        status: if has(name) {
            vulkan_status(host)
        } else {
            not_compiled(name)
        },
    };
    vec![
        Probe {
            device: "cpu",
            status: if has("cpu") {
                Status::Ready(format!("burn's flex backend on {} cores", host.cores))
            } else {
                not_compiled("flex")
            },
        },
        Probe {
            device: "ndarray",
            status: if has("ndarray") {
                Status::Ready(
                    "burn's NdArray backend (deprecated in burn 0.22; kept for comparison with cpu)"
                        .into(),
                )
            } else {
                not_compiled("ndarray")
            },
        },
        gpu("wgpu"),
        gpu("vulkan"),
        Probe {
            device: "cuda",
            status: if has("cuda") {
                cuda_status(host)
            } else {
                not_compiled("cuda")
            },
        },
    ]
}

fn vulkan_status(host: &Host) -> Status {
    if !host.vulkan_loader {
        return Status::Unavailable(
            "the Vulkan loader libvulkan.so.1 was not found: install it (Debian: libvulkan1)"
                .into(),
        );
    }
    let software = |icd: &str| icd.starts_with("lvp") || icd.contains("lavapipe");
    // Debian's mesa-vulkan-drivers installs the Intel and Radeon drivers next to lavapipe
    // whatever the machine has: a hardware driver counts only with its device present.
    let hardware: Vec<&String> = host
        .vulkan_icds
        .iter()
        .filter(|i| !software(i) && device_present(i, host))
        .collect();
    if host.nvidia_device && !host.vulkan_icds.iter().any(|i| i.starts_with("nvidia")) {
        let graphics = host
            .nvidia_capabilities
            .as_deref()
            .is_some_and(|c| c.contains("graphics") || c.contains("all"));
        let hint = if graphics {
            "install the NVIDIA driver's Vulkan ICD (nvidia_icd.json)"
        } else {
            "in a container, set NVIDIA_DRIVER_CAPABILITIES to include `graphics` (e.g. \
             compute,utility,graphics) so the runtime mounts the NVIDIA Vulkan ICD"
        };
        return Status::Unavailable(format!(
            "an NVIDIA GPU is present but no NVIDIA Vulkan ICD was found: {hint}"
        ));
    }
    if !hardware.is_empty() {
        let names: Vec<&str> = hardware.iter().map(|s| s.as_str()).collect();
        return Status::Ready(format!("Vulkan drivers: {}", names.join(", ")));
    }
    if host.vulkan_icds.iter().any(|i| software(i)) {
        return Status::Software(
            "only Mesa's software renderer (lavapipe/llvmpipe): it works, but slowly".into(),
        );
    }
    if !host.vulkan_icds.is_empty() {
        return Status::Unavailable(format!(
            "Vulkan drivers for hardware this machine does not have ({}): no GPU device node \
             (/dev/dri/renderD*, /dev/nvidia0)",
            host.vulkan_icds.join(", ")
        ));
    }
    Status::Unavailable(
        "no Vulkan driver (ICD) found: install your GPU's Vulkan driver, or Debian's \
         mesa-vulkan-drivers for a software one; in containers NVIDIA_DRIVER_CAPABILITIES \
         needs `graphics`"
            .into(),
    )
}

/// Whether the device a Vulkan driver drives is there: NVIDIA's needs `/dev/nvidia0`, Mesa's
/// hardware drivers a DRM render node; any other driver is given the benefit of the doubt.
fn device_present(icd: &str, host: &Host) -> bool {
    const MESA_HARDWARE: [&str; 10] = [
        "intel",
        "radeon",
        "nouveau",
        "freedreno",
        "panfrost",
        "broadcom",
        "virtio",
        "asahi",
        "powervr",
        "lima",
    ];
    if icd.starts_with("nvidia") {
        host.nvidia_device
    } else if MESA_HARDWARE.iter().any(|p| icd.starts_with(p)) {
        host.drm_render_node
    } else {
        true
    }
}

fn cuda_status(host: &Host) -> Status {
    if !host.nvidia_device {
        return Status::Unavailable("no NVIDIA device (/dev/nvidia0) on this machine".into());
    }
    if !host.libcuda {
        return Status::Unavailable(
            "libcuda.so.1 was not found: install the NVIDIA driver (in a container, the \
             runtime mounts it with the `utility,compute` capabilities)"
                .into(),
        );
    }
    let Some(nvrtc) = &host.libnvrtc else {
        return Status::Unavailable(
            "NVRTC (libnvrtc.so.12 or .13) was not found: install CUDA's nvrtc package, or put \
             its directory on LD_LIBRARY_PATH"
                .into(),
        );
    };
    if !host.cuda_headers {
        return Status::Unavailable(
            "the CUDA headers (cuda.h) were not found: set CUDA_PATH to the CUDA toolkit".into(),
        );
    }
    let driver = host
        .nvidia_driver
        .as_deref()
        .unwrap_or("driver version unknown");
    Status::Ready(format!("{driver}; {nvrtc}"))
}

/// The device `--device auto` picks: CUDA, then a hardware Vulkan GPU, then the CPU.
pub(crate) fn auto(probes: &[Probe]) -> &'static str {
    let ready = |name: &str| {
        probes
            .iter()
            .any(|p| p.device == name && matches!(p.status, Status::Ready(_)))
    };
    ["cuda", "wgpu", "vulkan"]
        .into_iter()
        .find(|d| ready(d))
        .unwrap_or("cpu")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [&str; 5] = ["cpu", "ndarray", "wgpu", "vulkan", "cuda"];

    fn status<'a>(probes: &'a [Probe], device: &str) -> &'a Status {
        &probes.iter().find(|p| p.device == device).unwrap().status
    }

    #[test]
    fn a_container_without_graphics_capability_is_told_what_to_set() {
        let host = Host {
            vulkan_loader: true,
            nvidia_device: true,
            nvidia_capabilities: Some("compute,utility".into()),
            ..Host::default()
        };
        let probes = probe(&host, &ALL);
        let Status::Unavailable(why) = status(&probes, "wgpu") else {
            panic!("{probes:?}");
        };
        assert!(why.contains("NVIDIA_DRIVER_CAPABILITIES"), "{why}");
        assert_eq!(auto(&probes), "cpu");
    }

    #[test]
    fn lavapipe_alone_is_software_and_never_picked() {
        let host = Host {
            vulkan_loader: true,
            vulkan_icds: vec!["lvp_icd.x86_64.json".into()],
            ..Host::default()
        };
        let probes = probe(&host, &ALL);
        assert!(matches!(status(&probes, "wgpu"), Status::Software(_)));
        assert_eq!(auto(&probes), "cpu");
    }

    /// What Debian's mesa-vulkan-drivers installs on a machine without a GPU (seen on the
    /// development machine): the Intel and Radeon drivers find nothing, lavapipe is software.
    #[test]
    fn mesa_hardware_drivers_without_a_gpu_are_not_a_gpu() {
        let mesa = [
            "intel_hasvk_icd.x86_64.json",
            "intel_icd.x86_64.json",
            "lvp_icd.x86_64.json",
            "radeon_icd.x86_64.json",
        ];
        let mut host = Host {
            vulkan_loader: true,
            vulkan_icds: mesa.iter().map(|s| (*s).to_string()).collect(),
            ..Host::default()
        };
        let probes = probe(&host, &ALL);
        assert!(
            matches!(status(&probes, "wgpu"), Status::Software(_)),
            "{probes:?}"
        );
        assert_eq!(auto(&probes), "cpu");

        host.vulkan_icds.retain(|i| !i.starts_with("lvp"));
        let probes = probe(&host, &ALL);
        let Status::Unavailable(why) = status(&probes, "wgpu") else {
            panic!("{probes:?}");
        };
        assert!(why.contains("/dev/dri/renderD*"), "{why}");

        host.drm_render_node = true;
        let probes = probe(&host, &ALL);
        assert!(
            matches!(status(&probes, "wgpu"), Status::Ready(_)),
            "{probes:?}"
        );
        assert_eq!(auto(&probes), "wgpu");
    }

    #[test]
    fn cuda_needs_device_driver_nvrtc_and_headers_and_is_picked_first() {
        let mut host = Host {
            nvidia_device: true,
            libcuda: true,
            vulkan_loader: true,
            vulkan_icds: vec!["nvidia_icd.json".into()],
            ..Host::default()
        };
        let probes = probe(&host, &ALL);
        let Status::Unavailable(why) = status(&probes, "cuda") else {
            panic!("{probes:?}");
        };
        assert!(why.contains("NVRTC"), "{why}");
        assert_eq!(auto(&probes), "wgpu", "a hardware Vulkan GPU is next best");
        host.libnvrtc = Some("libnvrtc.so.12".into());
        host.cuda_headers = true;
        assert_eq!(auto(&probe(&host, &ALL)), "cuda");
    }

    #[test]
    fn backends_not_built_in_say_which_feature_adds_them() {
        let probes = probe(&Host::default(), &["cpu"]);
        let Status::NotCompiled(how) = status(&probes, "cuda") else {
            panic!("{probes:?}");
        };
        assert!(how.contains("--features cuda"), "{how}");
        assert_eq!(auto(&probes), "cpu");
    }
}
