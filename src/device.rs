//! Device selection: `auto`, `cpu`, `cuda` or `cuda:N`, resolved once at load time.

use tch::{Cuda, Device};

/// A device as written in the configuration, before it is checked against the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// `cuda:0` when CUDA is available, else `cpu`.
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N (`cuda` means `cuda:0`).
    Cuda(usize),
}

impl DeviceSpec {
    /// Parses `auto`, `cpu`, `cuda` or `cuda:N`.
    pub fn parse(s: &str) -> Result<DeviceSpec, String> {
        match s.trim() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) if n < 64 => Ok(DeviceSpec::Cuda(n)),
                _ => Err(format!("'{other}' is not a device; use auto, cpu, cuda or cuda:N")),
            },
        }
    }

    /// Resolves against the machine; an explicit CUDA device that is not there is an error naming why.
    pub fn resolve(self) -> Result<Device, String> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Auto => Ok(if Cuda::is_available() { Device::Cuda(0) } else { Device::Cpu }),
            DeviceSpec::Cuda(n) => {
                if !Cuda::is_available() {
                    return Err(format!(
                        "device cuda:{n} requested but libtorch sees no CUDA device \
                         (no GPU, no driver, or a binary linked without libtorch_cuda)"
                    ));
                }
                let count = Cuda::device_count() as usize;
                if n >= count {
                    return Err(format!("device cuda:{n} requested but only {count} CUDA device(s) are visible"));
                }
                Ok(Device::Cuda(n))
            }
        }
    }
}

/// The name of a resolved device, as shown in metadata and metrics (`cpu`, `cuda:0`).
pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(n) => format!("cuda:{n}"),
        Device::Mps => "mps".to_string(),
        Device::Vulkan => "vulkan".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(DeviceSpec::parse("auto"), Ok(DeviceSpec::Auto));
        assert_eq!(DeviceSpec::parse("cpu"), Ok(DeviceSpec::Cpu));
        assert_eq!(DeviceSpec::parse("cuda"), Ok(DeviceSpec::Cuda(0)));
        assert_eq!(DeviceSpec::parse("cuda:3"), Ok(DeviceSpec::Cuda(3)));
        assert!(DeviceSpec::parse("gpu").is_err());
        assert!(DeviceSpec::parse("cuda:x").is_err());
    }

    #[test]
    fn explicit_cuda_without_gpu_names_the_cause() {
        if Cuda::is_available() {
            return; // only meaningful on a machine without a GPU
        }
        let e = DeviceSpec::Cuda(0).resolve().unwrap_err();
        assert!(e.contains("no CUDA device"), "{e}");
        assert_eq!(DeviceSpec::Auto.resolve(), Ok(Device::Cpu));
    }
}
