//! Facts about local processes, shared by the rollout lock (is a lock's holder still running?)
//! and the emulator (is a background emulator still running?), and who runs this one
//! (`user@host`: the lock's holder, the release history's actor, a notification's author).

/// `user@host` of this process.
pub fn current_owner() -> String {
    format!("{}@{}", current_user(), current_host())
}

/// The user running this process (`$USER`, else `uid N`).
pub fn current_user() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|user| !user.is_empty()))
        // CI containers often set no user name: the uid still tells runs apart.
        // SAFETY: `getuid` has no preconditions and cannot fail.
        .unwrap_or_else(|| format!("uid {}", unsafe { libc::getuid() }))
}

/// The host this process runs on.
pub fn current_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|host| host.trim().to_string())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// True when a process with this id runs (Linux: `/proc/PID/stat`). A zombie — exited but not
/// yet reaped by its parent — does not count: it serves nothing.
pub fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may contain spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}
