//! The fake's catalogue: zones, commercial types with prices and GPU facts, images.

use serde_json::{Value, json};

/// Zones the fake serves.
pub const ZONES: &[&str] = &["fr-par-1", "fr-par-2", "nl-ams-1", "pl-waw-2"];

/// A commercial type: name, vCPUs, RAM GiB, hourly EUR, GPUs, GPU name, GPU GiB, local
/// storage (false: block storage only, like Scaleway's GPU types), zones.
pub struct Offer {
    /// Commercial type.
    pub name: &'static str,
    /// vCPUs.
    pub ncpus: u32,
    /// RAM in GiB.
    pub ram_gib: u64,
    /// EUR per hour, excluding VAT.
    pub hourly: f64,
    /// GPUs.
    pub gpu: u32,
    /// GPU model.
    pub gpu_name: &'static str,
    /// GPU memory, GiB.
    pub gpu_gib: u64,
    /// Root volume is local (`l_ssd`); otherwise block (`sbs_volume`).
    pub local_storage: bool,
    /// Zones it is sold in.
    pub zones: &'static [&'static str],
}

/// Commercial types sold. Hourly prices as on Scaleway's public price list
/// (<https://www.scaleway.com/en/pricing/gpu/>, <https://www.scaleway.com/en/pricing/virtual-instances/>).
pub const OFFERS: &[Offer] = &[
    Offer {
        name: "DEV1-S",
        ncpus: 2,
        ram_gib: 2,
        hourly: 0.0088,
        gpu: 0,
        gpu_name: "",
        gpu_gib: 0,
        local_storage: true,
        zones: &["fr-par-1", "fr-par-2", "nl-ams-1", "pl-waw-2"],
    },
    Offer {
        name: "PLAY2-PICO",
        ncpus: 1,
        ram_gib: 2,
        hourly: 0.014,
        gpu: 0,
        gpu_name: "",
        gpu_gib: 0,
        local_storage: false,
        zones: &["fr-par-1", "fr-par-2", "nl-ams-1", "pl-waw-2"],
    },
    Offer {
        name: "L4-1-24G",
        ncpus: 8,
        ram_gib: 48,
        hourly: 0.75,
        gpu: 1,
        gpu_name: "L4",
        gpu_gib: 24,
        local_storage: false,
        zones: &["fr-par-2", "nl-ams-1", "pl-waw-2"],
    },
    Offer {
        name: "L40S-1-48G",
        ncpus: 8,
        ram_gib: 96,
        hourly: 1.4,
        gpu: 1,
        gpu_name: "L40S",
        gpu_gib: 48,
        local_storage: false,
        zones: &["fr-par-2"],
    },
    Offer {
        name: "H100-1-80G",
        ncpus: 24,
        ram_gib: 240,
        hourly: 2.73,
        gpu: 1,
        gpu_name: "H100",
        gpu_gib: 80,
        local_storage: false,
        zones: &["fr-par-2"],
    },
];

/// The offer named so.
pub fn offer(name: &str) -> Option<&'static Offer> {
    OFFERS.iter().find(|o| o.name == name)
}

const GIB: u64 = 1024 * 1024 * 1024;

/// The products of one zone, by commercial type (sorted), as `GET /products/servers`
/// lists them.
pub fn products(zone: &str) -> serde_json::Map<String, Value> {
    let mut servers = serde_json::Map::new();
    for o in OFFERS.iter().filter(|o| o.zones.contains(&zone)) {
        let gpu_info = (o.gpu > 0).then(|| {
            json!({"gpu_manufacturer": "NVIDIA", "gpu_name": o.gpu_name, "gpu_memory": o.gpu_gib * GIB})
        });
        let local_max = if o.local_storage {
            20_000_000_000u64
        } else {
            0
        };
        servers.insert(
            o.name.to_string(),
            json!({
                "alt_names": [],
                "arch": "x86_64",
                "ncpus": o.ncpus,
                "ram": o.ram_gib * GIB,
                "gpu": o.gpu,
                "gpu_info": gpu_info,
                "hourly_price": o.hourly,
                "monthly_price": (o.hourly * 730.0 * 100.0).round() / 100.0,
                "end_of_service": false,
                "volumes_constraint": {"min_size": 0, "max_size": local_max},
                "per_volume_constraint": {"l_ssd": {"min_size": if o.local_storage { 1_000_000_000u64 } else { 0 }, "max_size": local_max}},
                "scratch_storage_max_size": null,
                "scratch_storage_max_volumes_count": 0,
                "capabilities": {"boot_types": ["local", "rescue"], "block_storage": true, "max_file_systems": if o.gpu > 0 { 0 } else { 100 }},
                "network": {
                    "interfaces": [{"internal_bandwidth": 2_500_000_000u64, "internet_bandwidth": 2_500_000_000u64}],
                    "sum_internal_bandwidth": 2_500_000_000u64,
                    "sum_internet_bandwidth": 2_500_000_000u64,
                    "ipv6_support": true,
                },
                "block_bandwidth": 2_097_152_000u64,
            }),
        );
    }
    servers
}

/// Organisation that owns the public images (Scaleway's marketplace).
pub const IMAGE_OWNER: &str = "51b656e3-4865-41e8-adbc-0c45bdd780db";

/// Image labels the fake knows, with the UUID it reports for them.
pub const IMAGES: &[(&str, &str, &str)] = &[
    (
        "ubuntu_noble",
        "Ubuntu 24.04 Noble Numbat",
        "2a3f6d5c-0001-4a4e-9e3c-000000000001",
    ),
    (
        "ubuntu_jammy",
        "Ubuntu 22.04 Jammy Jellyfish",
        "2a3f6d5c-0001-4a4e-9e3c-000000000002",
    ),
    (
        "debian_bookworm",
        "Debian Bookworm",
        "2a3f6d5c-0001-4a4e-9e3c-000000000003",
    ),
    (
        "ubuntu_noble_gpu_os_13_nvidia",
        "Ubuntu Noble GPU OS 13 (Nvidia)",
        "2a3f6d5c-0001-4a4e-9e3c-000000000004",
    ),
];

/// An image by label or id: (label, name, id).
pub fn image(label_or_id: &str) -> Option<(&'static str, &'static str, &'static str)> {
    IMAGES
        .iter()
        .find(|(l, _, id)| *l == label_or_id || *id == label_or_id)
        .copied()
}
