//! Resource classes, traits and inventory records, with upstream's validation rules.

use serde::Deserialize;

use crate::error::Error;

/// os-resource-classes' standard classes, in upstream's order (their ids are their positions).
pub const STANDARD_CLASSES: &[&str] = &[
    "VCPU",
    "MEMORY_MB",
    "DISK_GB",
    "PCI_DEVICE",
    "SRIOV_NET_VF",
    "NUMA_SOCKET",
    "NUMA_CORE",
    "NUMA_THREAD",
    "NUMA_MEMORY_MB",
    "IPV4_ADDRESS",
    "VGPU",
    "VGPU_DISPLAY_HEAD",
    "NET_BW_EGR_KILOBIT_PER_SEC",
    "NET_BW_IGR_KILOBIT_PER_SEC",
    "PCPU",
    "MEM_ENCRYPTION_CONTEXT",
    "FPGA",
    "PGPU",
    "NET_PACKET_RATE_KILOPACKET_PER_SEC",
    "NET_PACKET_RATE_EGR_KILOPACKET_PER_SEC",
    "NET_PACKET_RATE_IGR_KILOPACKET_PER_SEC",
];

/// The os-traits standard traits this service knows (a subset: the ones compute agents and schedulers use).
pub const STANDARD_TRAITS: &[&str] = &[
    "COMPUTE_NODE",
    "COMPUTE_STATUS_DISABLED",
    "COMPUTE_DEVICE_TAGGING",
    "COMPUTE_NET_ATTACH_INTERFACE",
    "COMPUTE_NET_ATTACH_INTERFACE_WITH_TAG",
    "COMPUTE_VOLUME_ATTACH",
    "COMPUTE_VOLUME_ATTACH_WITH_TAG",
    "COMPUTE_VOLUME_EXTEND",
    "COMPUTE_VOLUME_MULTI_ATTACH",
    "COMPUTE_TRUSTED_CERTS",
    "COMPUTE_IMAGE_TYPE_RAW",
    "COMPUTE_IMAGE_TYPE_QCOW2",
    "COMPUTE_IMAGE_TYPE_ISO",
    "COMPUTE_IMAGE_TYPE_AMI",
    "COMPUTE_IMAGE_TYPE_ARI",
    "COMPUTE_IMAGE_TYPE_AKI",
    "COMPUTE_IMAGE_TYPE_VHD",
    "COMPUTE_IMAGE_TYPE_VHDX",
    "COMPUTE_IMAGE_TYPE_VDI",
    "COMPUTE_IMAGE_TYPE_VMDK",
    "COMPUTE_IMAGE_TYPE_PLOOP",
    "COMPUTE_ACCELERATORS",
    "COMPUTE_SOCKET_PCI_NUMA_AFFINITY",
    "COMPUTE_RESCUE_BFV",
    "COMPUTE_SECURE_BOOT",
    "COMPUTE_ADDRESS_SPACE_EMULATED",
    "COMPUTE_ADDRESS_SPACE_PASSTHROUGH",
    "HW_CPU_X86_AVX",
    "HW_CPU_X86_AVX2",
    "HW_CPU_X86_AVX512F",
    "HW_CPU_X86_SSE",
    "HW_CPU_X86_SSE2",
    "HW_CPU_X86_SSE3",
    "HW_CPU_X86_SSE41",
    "HW_CPU_X86_SSE42",
    "HW_CPU_X86_AESNI",
    "HW_CPU_X86_SVM",
    "HW_CPU_X86_VMX",
    "HW_CPU_HYPERTHREADING",
    "HW_NIC_SRIOV",
    "HW_GPU_API_VULKAN",
    "STORAGE_DISK_HDD",
    "STORAGE_DISK_SSD",
    "MISC_SHARES_VIA_AGGREGATE",
];

/// Longest resource class or trait name upstream accepts.
pub const MAX_NAME: usize = 255;

fn is_custom_name(name: &str) -> bool {
    name.len() <= MAX_NAME
        && name.strip_prefix("CUSTOM_").is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// Whether `name` is a standard resource class.
pub fn is_standard_class(name: &str) -> bool {
    STANDARD_CLASSES.contains(&name)
}

/// Checks a custom resource class name (`CUSTOM_[A-Z0-9_]+`), with upstream's message.
pub fn validate_custom_class(name: &str) -> Result<(), Error> {
    if is_custom_name(name) {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "JSON does not validate: '{name}' does not match '^CUSTOM\\_[A-Z0-9_]+$'"
        )))
    }
}

/// Checks a custom trait name (`CUSTOM_[A-Z0-9_]+`).
pub fn validate_custom_trait(name: &str) -> Result<(), Error> {
    if is_custom_name(name) {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "The trait is invalid. A valid trait must be no longer than 255 characters, start with the prefix \
             \"CUSTOM_\" and use following characters: \"A\"-\"Z\", \"0\"-\"9\" and \"_\" (got '{name}')"
        )))
    }
}

/// Whether `name` is a standard trait.
pub fn is_standard_trait(name: &str) -> bool {
    STANDARD_TRAITS.contains(&name)
}

/// Largest integer upstream's schemas allow for inventory fields.
pub const MAX_INT: i64 = 0x7FFF_FFFF;

/// One inventory record of a provider for one resource class.
#[derive(Clone, Debug, PartialEq)]
pub struct Inventory {
    pub resource_class: String,
    pub total: i64,
    pub reserved: i64,
    pub min_unit: i64,
    pub max_unit: i64,
    pub step_size: i64,
    pub allocation_ratio: f64,
}

impl Inventory {
    /// How much may be allocated in all: `(total - reserved) * allocation_ratio`, rounded down as upstream does.
    pub fn capacity(&self) -> i64 {
        ((self.total - self.reserved) as f64 * self.allocation_ratio) as i64
    }

    /// Whether one more allocation of `amount` fits on top of `used`, honouring min/max unit and step size.
    pub fn fits(&self, used: i64, amount: i64) -> bool {
        amount >= self.min_unit
            && amount <= self.max_unit
            && self.step_size > 0
            && amount % self.step_size == 0
            && used + amount <= self.capacity()
    }
}

/// An inventory as the API accepts it (defaults as upstream; `total` required).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryInput {
    pub total: i64,
    #[serde(default)]
    pub reserved: i64,
    #[serde(default = "one")]
    pub min_unit: i64,
    pub max_unit: Option<i64>,
    #[serde(default = "one")]
    pub step_size: i64,
    #[serde(default = "ratio_one")]
    pub allocation_ratio: f64,
    /// Only in a single-inventory PUT body, and then required there; ignored elsewhere.
    #[serde(default)]
    pub resource_provider_generation: Option<i64>,
}

fn one() -> i64 {
    1
}
fn ratio_one() -> f64 {
    1.0
}

impl InventoryInput {
    /// Validates ranges as upstream's JSON schema and `reserved <= total` rule (equality allowed, since 1.26).
    pub fn into_inventory(self, resource_class: &str) -> Result<Inventory, Error> {
        let max_unit = self.max_unit.unwrap_or(MAX_INT);
        let bad = |field: &str, min: i64| {
            Error::BadRequest(format!(
                "JSON does not validate: value of '{field}' for resource class {resource_class} must be between \
                 {min} and {MAX_INT}"
            ))
        };
        for (field, value, min) in [
            ("total", self.total, 1),
            ("reserved", self.reserved, 0),
            ("min_unit", self.min_unit, 1),
            ("max_unit", max_unit, 1),
            ("step_size", self.step_size, 1),
        ] {
            if !(min..=MAX_INT).contains(&value) {
                return Err(bad(field, min));
            }
        }
        if !(self.allocation_ratio.is_finite() && self.allocation_ratio > 0.0 && self.allocation_ratio <= 3.40282e38)
        {
            return Err(Error::BadRequest(format!(
                "JSON does not validate: allocation_ratio for resource class {resource_class} must be a positive \
                 number"
            )));
        }
        if self.reserved > self.total {
            return Err(Error::BadRequest(format!(
                "Unable to create inventory for resource provider: the reserved value {} for resource class \
                 {resource_class} is greater than total {}",
                self.reserved, self.total
            )));
        }
        if self.min_unit > max_unit {
            return Err(Error::BadRequest(format!(
                "min_unit {} is greater than max_unit {max_unit} for resource class {resource_class}",
                self.min_unit
            )));
        }
        Ok(Inventory {
            resource_class: resource_class.to_string(),
            total: self.total,
            reserved: self.reserved,
            min_unit: self.min_unit,
            max_unit,
            step_size: self.step_size,
            allocation_ratio: self.allocation_ratio,
        })
    }
}

/// Parses `VCPU:1,MEMORY_MB:512` (a `resources` query value) into (class, amount) pairs.
pub fn parse_resources(value: &str) -> Result<Vec<(String, i64)>, Error> {
    let bad = || {
        Error::BadRequest(format!(
            "Badly formed resources parameter. Expected resources query string parameter in form: \
             ?resources=VCPU:2,MEMORY_MB:1024. Got: {value}."
        ))
    };
    let mut out: Vec<(String, i64)> = Vec::new();
    for item in value.split(',') {
        let (class, amount) = item.split_once(':').ok_or_else(bad)?;
        let class = class.trim();
        let amount: i64 = amount.trim().parse().map_err(|_| bad())?;
        if class.is_empty() {
            return Err(bad());
        }
        if amount < 1 {
            return Err(Error::BadRequest(format!(
                "Requested resource {class} expected positive integer amount. Got: {amount}."
            )));
        }
        if out.iter().any(|(c, _)| c == class) {
            return Err(Error::BadRequest(format!(
                "Resource class {class} was specified more than once in the request."
            )));
        }
        out.push((class.to_string(), amount));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(total: i64) -> InventoryInput {
        InventoryInput {
            total,
            reserved: 0,
            min_unit: 1,
            max_unit: None,
            step_size: 1,
            allocation_ratio: 1.0,
            resource_provider_generation: None,
        }
    }

    #[test]
    fn custom_names() {
        assert!(validate_custom_class("CUSTOM_GOLD_2").is_ok());
        for bad in ["CUSTOM_", "custom_x", "GOLD", "CUSTOM_a", "CUSTOM_X-Y"] {
            assert!(validate_custom_class(bad).is_err(), "{bad}");
            assert!(validate_custom_trait(bad).is_err(), "{bad}");
        }
        assert!(is_standard_class("VCPU") && !is_standard_class("CUSTOM_X"));
    }

    #[test]
    fn capacity_honours_ratio_and_reserved() {
        let mut inv = input(8).into_inventory("VCPU").unwrap();
        inv.allocation_ratio = 16.0;
        inv.reserved = 2;
        assert_eq!(inv.capacity(), 96);
        assert!(inv.fits(95, 1));
        assert!(!inv.fits(96, 1));
        inv.step_size = 2;
        assert!(!inv.fits(0, 3));
        inv.max_unit = 4;
        assert!(!inv.fits(0, 6));
    }

    #[test]
    fn inventory_validation() {
        assert!(input(0).into_inventory("VCPU").is_err());
        let mut i = input(4);
        i.reserved = 5;
        assert!(i.into_inventory("VCPU").is_err());
        let mut i = input(4);
        i.reserved = 4;
        assert!(i.into_inventory("VCPU").is_ok());
        let mut i = input(4);
        i.allocation_ratio = 0.0;
        assert!(i.into_inventory("VCPU").is_err());
    }

    #[test]
    fn resources_parameter() {
        assert_eq!(
            parse_resources("VCPU:1,MEMORY_MB:512").unwrap(),
            vec![("VCPU".to_string(), 1), ("MEMORY_MB".to_string(), 512)]
        );
        for bad in ["VCPU", "VCPU:x", "VCPU:0", "VCPU:1,VCPU:2", ":1", ""] {
            assert!(parse_resources(bad).is_err(), "{bad}");
        }
    }
}
