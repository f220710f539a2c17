//! Facts about local processes, shared by the rollout lock (is a lock's holder still running?)
//! and the emulator (is a background emulator still running?).

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
