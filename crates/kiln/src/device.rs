//! Picks the burn device named on the command line or in a config. The backends are cargo
//! features of this binary; asking for one that was not built in is a clear error.

use anyhow::{Result, bail};
use burn::tensor::Device;

/// Device names accepted, for help texts.
pub(crate) const HELP: &str = "cpu (burn's flex backend, the default), ndarray, wgpu, vulkan, cuda, cuda:N, or auto (the best that can run here: see `kiln devices`)";

/// The device for `name`, and its canonical name for records.
///
/// # Errors
/// An unknown name, or a backend this binary was built without (with the cargo feature to add).
pub(crate) fn parse(name: &str) -> Result<(Device, String)> {
    let name = name.trim().to_ascii_lowercase();
    match name.as_str() {
        "auto" => {
            let host = crate::probe::Host::detect();
            let probes = crate::probe::probe(&host, &crate::probe::compiled());
            parse(crate::probe::auto(&probes))
        }
        "cpu" | "flex" => cpu(),
        "ndarray" => ndarray(),
        "wgpu" => wgpu(),
        "vulkan" => vulkan(),
        _ if name == "cuda" || name.starts_with("cuda:") => {
            let index = match name.strip_prefix("cuda:") {
                Some(i) => i
                    .parse::<usize>()
                    .map_err(|_| anyhow::anyhow!("device {name:?}: expected cuda:<index>"))?,
                None => 0,
            };
            cuda(index)
        }
        _ => bail!("unknown device {name:?}; use {HELP}"),
    }
}

#[cfg(feature = "flex")]
fn cpu() -> Result<(Device, String)> {
    Ok((Device::flex(), "cpu (flex)".into()))
}
#[cfg(not(feature = "flex"))]
fn cpu() -> Result<(Device, String)> {
    bail!("this kiln was built without the CPU backend: rebuild with `--features flex`")
}

#[cfg(feature = "ndarray")]
fn ndarray() -> Result<(Device, String)> {
    #[expect(
        deprecated,
        reason = "burn 0.22 deprecates NdArray; kept for CPU inference speed"
    )]
    let device = Device::ndarray();
    Ok((device, "ndarray".into()))
}
#[cfg(not(feature = "ndarray"))]
fn ndarray() -> Result<(Device, String)> {
    bail!("this kiln was built without the ndarray backend: rebuild with `--features ndarray`")
}

#[cfg(feature = "wgpu")]
fn wgpu() -> Result<(Device, String)> {
    use burn::tensor::wgpu::WgpuBackend;
    // A runtime starts once per process; serve's reloads ask again.
    static DEVICE: std::sync::OnceLock<Result<Device, String>> = std::sync::OnceLock::new();
    let device = DEVICE.get_or_init(|| {
        let host = crate::probe::Host::detect();
        // Vulkan is pinned wherever a Vulkan driver is installed. With only a software adapter
        // there (lavapipe), wgpu's automatic choice goes on to probe OpenGL through EGL, whose
        // context lock gives up after one second on a loaded machine ("Could not lock adapter
        // context. This is most-likely a deadlock.").
        let api = if host.vulkan_loader && !host.vulkan_icds.is_empty() {
            WgpuBackend::Vulkan
        } else {
            WgpuBackend::Auto
        };
        Device::wgpu_options()
            .graphics_api(api)
            .init()
            .map_err(|e| e.to_string())
    });
    match device {
        Ok(device) => Ok((device.clone(), "wgpu".into())),
        Err(e) => bail!("wgpu did not start: {e} (`kiln devices` says what this machine has)"),
    }
}
#[cfg(not(feature = "wgpu"))]
fn wgpu() -> Result<(Device, String)> {
    bail!("this kiln was built without wgpu: rebuild with `cargo build --release --features wgpu`")
}

#[cfg(feature = "vulkan")]
fn vulkan() -> Result<(Device, String)> {
    refuse_unavailable("vulkan")?;
    Ok((
        Device::vulkan(burn::tensor::DeviceKind::DefaultDevice),
        "vulkan".into(),
    ))
}
#[cfg(not(feature = "vulkan"))]
fn vulkan() -> Result<(Device, String)> {
    bail!(
        "this kiln was built without vulkan: rebuild with `cargo build --release --features vulkan`"
    )
}

#[cfg(feature = "cuda")]
fn cuda(index: usize) -> Result<(Device, String)> {
    // burn's CUDA runtime panics on its first kernel when the driver is missing; refuse here,
    // in the words `kiln devices` uses.
    refuse_unavailable("cuda")?;
    Ok((Device::cuda(index), format!("cuda:{index}")))
}
#[cfg(not(feature = "cuda"))]
fn cuda(_index: usize) -> Result<(Device, String)> {
    bail!(
        "this kiln was built without CUDA: rebuild with `cargo build --release --features cuda` (it needs the driver's libcuda, NVRTC and the CUDA headers at run time; see docs/cuda-offline.md)"
    )
}

/// An error with `kiln devices`' reason when the probe finds that `backend` cannot run here.
#[cfg(any(feature = "cuda", feature = "vulkan"))]
fn refuse_unavailable(backend: &str) -> Result<()> {
    let host = crate::probe::Host::detect();
    let probes = crate::probe::probe(&host, &crate::probe::compiled());
    match probes
        .iter()
        .find(|p| p.device == backend)
        .map(|p| &p.status)
    {
        Some(crate::probe::Status::Unavailable(why)) => {
            bail!("{backend} cannot run here: {why} (`kiln devices` lists what can)")
        }
        _ => Ok(()),
    }
}
