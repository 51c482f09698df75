//! The fixed shape of the simulated estate: segments, products and the
//! intended network policy between segments.

use schemas::{Environment, IntendedAction};

/// An operating-system family; decides which products an asset runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Os {
    Linux,
    Windows,
    Appliance,
}

impl Os {
    pub const fn family(self) -> &'static str {
        match self {
            Os::Linux => "linux",
            Os::Windows => "windows",
            Os::Appliance => "embedded",
        }
    }
}

/// A product that receives CVEs and patches.
pub struct Product {
    pub name: &'static str,
    pub vendor: &'static str,
    pub package: &'static str,
    /// New CVEs per day across the industry that affect this product.
    pub cves_per_day: f64,
    /// Day of the week (0 = Monday) and hour (UTC) of the vendor's regular release.
    pub release_weekday: u32,
    pub release_hour: u32,
}

pub const PRODUCTS: &[Product] = &[
    Product {
        name: "kernel",
        vendor: "linux",
        package: "linux-image",
        cves_per_day: 0.45,
        release_weekday: 2,
        release_hour: 14,
    },
    Product {
        name: "windows-server",
        vendor: "microsoft",
        package: "windows-server",
        cves_per_day: 0.4,
        release_weekday: 1,
        release_hour: 17,
    },
    Product {
        name: "windows-client",
        vendor: "microsoft",
        package: "windows-client",
        cves_per_day: 0.35,
        release_weekday: 1,
        release_hour: 17,
    },
    Product {
        name: "openssl",
        vendor: "openssl",
        package: "openssl",
        cves_per_day: 0.08,
        release_weekday: 3,
        release_hour: 12,
    },
    Product { name: "nginx", vendor: "f5", package: "nginx", cves_per_day: 0.05, release_weekday: 2, release_hour: 15 },
    Product {
        name: "postgresql",
        vendor: "postgresql",
        package: "postgresql",
        cves_per_day: 0.06,
        release_weekday: 3,
        release_hour: 13,
    },
    Product {
        name: "openssh",
        vendor: "openbsd",
        package: "openssh-server",
        cves_per_day: 0.04,
        release_weekday: 0,
        release_hour: 16,
    },
    Product {
        name: "gateway-os",
        vendor: "contoso",
        package: "gateway-os",
        cves_per_day: 0.07,
        release_weekday: 0,
        release_hour: 18,
    },
    Product {
        name: "sensor-firmware",
        vendor: "fabrikam",
        package: "sensor-fw",
        cves_per_day: 0.05,
        release_weekday: 4,
        release_hour: 9,
    },
    Product {
        name: "jre",
        vendor: "oracle",
        package: "openjdk",
        cves_per_day: 0.08,
        release_weekday: 1,
        release_hour: 20,
    },
    Product {
        name: "edge-browser",
        vendor: "microsoft",
        package: "msedge",
        cves_per_day: 0.3,
        release_weekday: 3,
        release_hour: 19,
    },
];

/// A network micro-segment and what runs in it.
pub struct Segment {
    pub name: &'static str,
    /// Prefix of the asset ids in this segment.
    pub host_prefix: &'static str,
    pub environment: Environment,
    /// Share of the fleet, relative to the other segments.
    pub weight: f64,
    /// Chance that an asset here is reachable from the internet.
    pub exposed: f64,
    pub os: Os,
    /// Indexes into [`PRODUCTS`].
    pub products: &'static [usize],
}

pub const SEGMENTS: &[Segment] = &[
    Segment {
        name: "cloud-web",
        host_prefix: "web",
        environment: Environment::Cloud,
        weight: 0.14,
        exposed: 0.7,
        os: Os::Linux,
        products: &[0, 3, 4],
    },
    Segment {
        name: "cloud-api",
        host_prefix: "api",
        environment: Environment::Cloud,
        weight: 0.12,
        exposed: 0.3,
        os: Os::Linux,
        products: &[0, 3, 9],
    },
    Segment {
        name: "cloud-data",
        host_prefix: "db",
        environment: Environment::Cloud,
        weight: 0.06,
        exposed: 0.0,
        os: Os::Linux,
        products: &[0, 5],
    },
    Segment {
        name: "cloud-batch",
        host_prefix: "batch",
        environment: Environment::Cloud,
        weight: 0.08,
        exposed: 0.0,
        os: Os::Linux,
        products: &[0, 9],
    },
    Segment {
        name: "corp-users",
        host_prefix: "ws",
        environment: Environment::Onprem,
        weight: 0.22,
        exposed: 0.0,
        os: Os::Windows,
        products: &[2, 10],
    },
    Segment {
        name: "corp-servers",
        host_prefix: "srv",
        environment: Environment::Onprem,
        weight: 0.08,
        exposed: 0.05,
        os: Os::Windows,
        products: &[1],
    },
    Segment {
        name: "core-db",
        host_prefix: "coredb",
        environment: Environment::Onprem,
        weight: 0.03,
        exposed: 0.0,
        os: Os::Linux,
        products: &[0, 3, 5],
    },
    Segment {
        name: "dmz",
        host_prefix: "dmz",
        environment: Environment::Onprem,
        weight: 0.03,
        exposed: 0.9,
        os: Os::Linux,
        products: &[0, 4, 6],
    },
    Segment {
        name: "mgmt",
        host_prefix: "jump",
        environment: Environment::Onprem,
        weight: 0.02,
        exposed: 0.1,
        os: Os::Linux,
        products: &[0, 6],
    },
    Segment {
        name: "branch-gw",
        host_prefix: "gw",
        environment: Environment::Edge,
        weight: 0.06,
        exposed: 0.95,
        os: Os::Appliance,
        products: &[7, 3],
    },
    Segment {
        name: "iot-sensors",
        host_prefix: "sensor",
        environment: Environment::Edge,
        weight: 0.10,
        exposed: 0.15,
        os: Os::Appliance,
        products: &[8],
    },
    Segment {
        name: "retail-pos",
        host_prefix: "pos",
        environment: Environment::Edge,
        weight: 0.06,
        exposed: 0.05,
        os: Os::Windows,
        products: &[2],
    },
];

/// A kind of traffic between two segments and what the intended policy says of it.
pub struct FlowRule {
    pub src: usize,
    pub dst: usize,
    pub port: u16,
    pub intended: IntendedAction,
    /// Connections per source asset per ten minutes, before the daily cycle.
    pub rate: f64,
}

const fn rule(src: usize, dst: usize, port: u16, intended: IntendedAction, rate: f64) -> FlowRule {
    FlowRule { src, dst, port, intended, rate }
}

pub const FLOWS: &[FlowRule] = &[
    rule(0, 1, 8443, IntendedAction::Allow, 6.0),
    rule(1, 2, 5432, IntendedAction::Allow, 4.0),
    rule(3, 2, 5432, IntendedAction::Allow, 3.0),
    rule(3, 0, 80, IntendedAction::Unknown, 0.3),
    rule(4, 0, 443, IntendedAction::Allow, 2.0),
    rule(4, 5, 445, IntendedAction::Allow, 1.5),
    rule(4, 6, 5432, IntendedAction::Deny, 0.05),
    rule(5, 6, 5432, IntendedAction::Allow, 3.0),
    rule(7, 5, 443, IntendedAction::Allow, 2.0),
    rule(7, 6, 5432, IntendedAction::Deny, 0.1),
    rule(8, 5, 22, IntendedAction::Allow, 0.5),
    rule(8, 6, 22, IntendedAction::Allow, 0.3),
    rule(8, 9, 22, IntendedAction::Allow, 0.2),
    rule(9, 6, 5432, IntendedAction::Deny, 0.08),
    rule(9, 1, 443, IntendedAction::Allow, 1.0),
    rule(10, 9, 8883, IntendedAction::Allow, 2.0),
    rule(10, 5, 445, IntendedAction::Deny, 0.05),
    rule(10, 1, 443, IntendedAction::Unknown, 0.2),
    rule(11, 1, 443, IntendedAction::Allow, 1.5),
    rule(11, 4, 3389, IntendedAction::Deny, 0.03),
];

/// Error classes orchestrators report for failed deployments.
pub const DEPLOY_ERRORS: &[&str] = &[
    "reboot_timeout",
    "disk_full",
    "dependency_conflict",
    "download_failed",
    "agent_unreachable",
    "service_failed_to_start",
];

/// Posture checks that can fail.
pub const POSTURE_CHECKS: &[&str] =
    &["os_patch_level", "edr_running", "disk_encryption", "firewall_enabled", "secure_boot"];
