//! The id of a service under test, in one line: on the emulator (project and region `local`, as
//! service files of kind `local` name them) or anywhere else.

#![allow(dead_code)] // Each test binary uses a different part.

use deployer::platform::ServiceId;

/// Service `name` in `project` and `region`.
pub fn service_id(project: &str, region: &str, name: &str) -> ServiceId {
    ServiceId {
        project: project.into(),
        region: region.into(),
        name: name.into(),
    }
}

/// Service `name` on the emulator: project and region `local`.
pub fn local_service_id(name: &str) -> ServiceId {
    service_id("local", "local", name)
}
