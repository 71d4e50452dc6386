//! The fake's fixed catalog: locations, server types with prices, images.

use serde_json::{Value, json};

/// One location: (id, name, description, country, city, lat, lon, network zone, dc number).
type LocRow = (
    i64,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    f64,
    f64,
    &'static str,
    u32,
);
const LOCATIONS: &[LocRow] = &[
    (
        1,
        "fsn1",
        "Falkenstein DC Park 1",
        "DE",
        "Falkenstein",
        50.47612,
        12.370071,
        "eu-central",
        14,
    ),
    (
        2,
        "nbg1",
        "Nuremberg DC Park 1",
        "DE",
        "Nuremberg",
        49.452102,
        11.076665,
        "eu-central",
        3,
    ),
    (
        3,
        "hel1",
        "Helsinki DC Park 1",
        "FI",
        "Helsinki",
        60.169855,
        24.938379,
        "eu-central",
        2,
    ),
    (
        4,
        "ash",
        "Ashburn, VA",
        "US",
        "Ashburn, VA",
        39.045821,
        -77.487073,
        "us-east",
        1,
    ),
    (
        5,
        "hil",
        "Hillsboro, OR",
        "US",
        "Hillsboro, OR",
        45.54222,
        -122.95194,
        "us-west",
        1,
    ),
    (
        6,
        "sin",
        "Singapore",
        "SG",
        "Singapore",
        1.283333,
        103.833333,
        "ap-southeast",
        1,
    ),
];

/// One server type: (id, name, description, cores, memory GB, disk GB, cpu type,
/// architecture, hourly net EUR, monthly net EUR, locations).
type TypeRow = (
    i64,
    &'static str,
    &'static str,
    i64,
    f64,
    i64,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
);
const SERVER_TYPES: &[TypeRow] = &[
    (
        22,
        "cx22",
        "CX22",
        2,
        4.0,
        40,
        "shared",
        "x86",
        "0.0060",
        "3.7900",
        &["fsn1", "nbg1", "hel1"],
    ),
    (
        23,
        "cx32",
        "CX32",
        4,
        8.0,
        80,
        "shared",
        "x86",
        "0.0110",
        "6.8000",
        &["fsn1", "nbg1", "hel1"],
    ),
    (
        1,
        "cpx11",
        "CPX 11",
        2,
        2.0,
        40,
        "shared",
        "x86",
        "0.0080",
        "4.9900",
        &["fsn1", "nbg1", "hel1", "ash", "hil", "sin"],
    ),
    (
        3,
        "cpx21",
        "CPX 21",
        3,
        4.0,
        80,
        "shared",
        "x86",
        "0.0141",
        "8.9900",
        &["fsn1", "nbg1", "hel1", "ash", "hil", "sin"],
    ),
    (
        96,
        "ccx13",
        "CCX13 Dedicated CPU",
        2,
        8.0,
        80,
        "dedicated",
        "x86",
        "0.0224",
        "13.9900",
        &["fsn1", "nbg1", "hel1", "ash", "hil", "sin"],
    ),
    (
        98,
        "ccx33",
        "CCX33 Dedicated CPU",
        8,
        32.0,
        240,
        "dedicated",
        "x86",
        "0.0882",
        "54.9900",
        &["fsn1", "nbg1", "hel1", "ash", "hil", "sin"],
    ),
    (
        45,
        "cax11",
        "CAX11",
        2,
        4.0,
        40,
        "shared",
        "arm",
        "0.0060",
        "3.7900",
        &["fsn1", "nbg1", "hel1"],
    ),
];

/// One system image: (id, name, description, os flavor, os version).
const IMAGES: &[(i64, &str, &str, &str, &str)] = &[
    (67794396, "ubuntu-22.04", "Ubuntu 22.04", "ubuntu", "22.04"),
    (161547269, "ubuntu-24.04", "Ubuntu 24.04", "ubuntu", "24.04"),
    (114690387, "debian-12", "Debian 12", "debian", "12"),
    (45557056, "debian-11", "Debian 11", "debian", "11"),
    (114690389, "fedora-41", "Fedora 41", "fedora", "41"),
    (114690390, "rocky-9", "Rocky Linux 9", "rocky", "9"),
    (114690391, "alma-9", "AlmaLinux 9", "alma", "9"),
];

/// VAT applied to net prices to get gross prices (Germany).
const VAT: f64 = 0.19;

fn gross(net: &str) -> String {
    let n: f64 = net.parse().unwrap_or(0.0);
    format!("{:.10}", n * (1.0 + VAT))
}

fn net(text: &str) -> String {
    let n: f64 = text.parse().unwrap_or(0.0);
    format!("{n:.10}")
}

/// All location objects.
pub fn locations() -> Vec<Value> {
    LOCATIONS.iter().map(location_json).collect()
}

fn location_json(l: &LocRow) -> Value {
    json!({
        "id": l.0, "name": l.1, "description": l.2, "country": l.3, "city": l.4,
        "latitude": l.5, "longitude": l.6, "network_zone": l.7,
    })
}

/// The location object with this name.
pub fn location(name: &str) -> Option<Value> {
    LOCATIONS.iter().find(|l| l.1 == name).map(location_json)
}

/// The location object with this id.
pub fn location_by_id(id: i64) -> Option<Value> {
    LOCATIONS.iter().find(|l| l.0 == id).map(location_json)
}

fn prices_json(t: &TypeRow) -> Vec<Value> {
    t.10.iter()
        .map(|loc| {
            json!({
                "location": loc,
                "price_hourly": { "net": net(t.8), "gross": gross(t.8) },
                "price_monthly": { "net": net(t.9), "gross": gross(t.9) },
                "included_traffic": if loc.len() == 3 { 1099511627776i64 } else { 21990232555520i64 },
                "price_per_tb_traffic": { "net": "1.0000000000", "gross": "1.1900000000" },
            })
        })
        .collect()
}

fn server_type_json(t: &TypeRow) -> Value {
    json!({
        "id": t.0, "name": t.1, "description": t.2, "category": if t.6 == "dedicated" { "dedicated_cpu" } else { "shared_cpu" },
        "cores": t.3, "memory": t.4, "disk": t.5, "deprecated": false, "deprecation": null,
        "prices": prices_json(t),
        "storage_type": "local", "cpu_type": t.6, "architecture": t.7,
        "locations": t.10.iter().map(|n| {
            let id = LOCATIONS.iter().find(|l| l.1 == *n).map(|l| l.0).unwrap_or(0);
            json!({ "id": id, "name": n, "deprecation": null, "available": true, "recommended": true })
        }).collect::<Vec<_>>(),
    })
}

/// All server type objects.
pub fn server_types() -> Vec<Value> {
    SERVER_TYPES.iter().map(server_type_json).collect()
}

/// The server type object with this name.
pub fn server_type(name: &str) -> Option<Value> {
    SERVER_TYPES
        .iter()
        .find(|t| t.1 == name)
        .map(server_type_json)
}

/// The server type object with this id.
pub fn server_type_by_id(id: i64) -> Option<Value> {
    SERVER_TYPES
        .iter()
        .find(|t| t.0 == id)
        .map(server_type_json)
}

/// True when the type is sold in the location.
pub fn type_sold_in(type_name: &str, location: &str) -> bool {
    SERVER_TYPES
        .iter()
        .any(|t| t.1 == type_name && t.10.contains(&location))
}

/// The first location where a type is sold.
pub fn first_location_of(type_name: &str) -> Option<&'static str> {
    SERVER_TYPES
        .iter()
        .find(|t| t.1 == type_name)
        .and_then(|t| t.10.first().copied())
}

/// Disk size of a type in GB.
pub fn disk_of(type_name: &str) -> i64 {
    SERVER_TYPES
        .iter()
        .find(|t| t.1 == type_name)
        .map(|t| t.5)
        .unwrap_or(20)
}

fn image_json(i: &(i64, &str, &str, &str, &str)) -> Value {
    json!({
        "id": i.0, "type": "system", "status": "available", "name": i.1, "description": i.2,
        "image_size": null, "disk_size": 5, "created": "2024-04-25T12:00:00+00:00",
        "created_from": null, "bound_to": null, "os_flavor": i.3, "os_version": i.4,
        "rapid_deploy": true, "protection": { "delete": false }, "deprecated": null,
        "deleted": null, "labels": {}, "architecture": "x86",
    })
}

/// All image objects.
pub fn images() -> Vec<Value> {
    IMAGES.iter().map(image_json).collect()
}

/// The image with this name or numeric id.
pub fn image(name_or_id: &str) -> Option<Value> {
    IMAGES
        .iter()
        .find(|i| i.1 == name_or_id || i.0.to_string() == name_or_id)
        .map(image_json)
}

/// The `pricing` object of `GET /pricing`.
pub fn pricing() -> Value {
    let locs: Vec<&str> = LOCATIONS.iter().map(|l| l.1).collect();
    json!({
        "currency": "EUR",
        "vat_rate": "19.00",
        "image": { "price_per_gb_month": { "net": "0.0119000000", "gross": "0.0141610000" } },
        "floating_ip": { "price_monthly": { "net": "3.0000000000", "gross": "3.5700000000" } },
        "floating_ips": [{ "type": "ipv4", "prices": locs.iter().map(|l| json!({
            "location": l, "price_monthly": { "net": "3.0000000000", "gross": "3.5700000000" } })).collect::<Vec<_>>() }],
        "primary_ips": [{ "type": "ipv4", "prices": locs.iter().map(|l| json!({
            "location": l,
            "price_hourly": { "net": "0.0008000000", "gross": "0.0009520000" },
            "price_monthly": { "net": "0.5000000000", "gross": "0.5950000000" } })).collect::<Vec<_>>() }],
        "server_backup": { "percentage": "20.00" },
        "server_types": SERVER_TYPES.iter().map(|t| json!({ "id": t.0, "name": t.1, "prices": prices_json(t) })).collect::<Vec<_>>(),
        "load_balancer_types": [],
        "volume": { "price_per_gb_month": { "net": "0.0440000000", "gross": "0.0523600000" } },
    })
}
