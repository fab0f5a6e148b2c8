// Child processes (progsyncd, nginx) and what /proc says about them.
import Foundation
import Glibc

/// A child started with posix_spawn, its stdout and stderr going to a log file.
final class ChildProcess {
    let name: String
    let pid: pid_t
    private(set) var exited = false
    private(set) var exitStatus: Int32 = 0

    init(name: String, executable: String, arguments: [String], logPath: String, environment: [String: String] = [:]) throws {
        self.name = name
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        let env = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let envp: [UnsafeMutablePointer<CChar>?] = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for p in argv { free(p) }
            for p in envp { free(p) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, nil, argv, envp)
        guard rc == 0 else { throw BenchError("could not start \(executable): \(String(cString: strerror(rc)))") }
        self.pid = pid
    }

    /// Non-blocking check.
    var isRunning: Bool {
        if exited { return false }
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid {
            exited = true
            exitStatus = status
            return false
        }
        return true
    }

    /// SIGTERM, wait up to `timeout` seconds, then SIGKILL. Returns how it ended.
    @discardableResult
    func stop(timeout: Double = 15) -> String {
        guard isRunning else { return "had already exited (status \(exitStatus))" }
        kill(pid, SIGTERM)
        let deadline = monotonicNanos() + UInt64(timeout * 1e9)
        while monotonicNanos() < deadline {
            if !isRunning { return "stopped (wait status \(exitStatus))" }
            sleepNanos(20_000_000)
        }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        exited = true
        return "did not stop within \(Int(timeout)) s; killed"
    }
}

/// A field of /proc/PID/status in kB ("VmRSS", "VmHWM", ...).
func procStatusKB(pid: pid_t, field: String) -> Int? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
        let digits = line.dropFirst(field.count + 1).filter { $0.isNumber }
        return Int(digits)
    }
    return nil
}

/// utime + stime of a process in seconds, from /proc/PID/stat.
func processCPUSeconds(pid: pid_t) -> Double? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = text.lastIndex(of: ")")
    else { return nil }
    let fields = text[text.index(after: close)...].split(separator: " ")
    // After "pid (comm)": state is field 3, utime 14, stime 15 → indexes 11 and 12 here.
    guard fields.count > 13, let u = Double(fields[11]), let s = Double(fields[12]) else { return nil }
    return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

func processThreadCount(pid: pid_t) -> Int? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix("Threads:") {
        return Int(line.dropFirst(8).trimmingCharacters(in: .whitespaces))
    }
    return nil
}

/// Waits until a connection to the socket succeeds and `GET path` answers, or the child dies.
func waitForSocket(_ path: String, child: ChildProcess, probePath: String, timeout: Double) throws {
    let deadline = monotonicNanos() + UInt64(timeout * 1e9)
    var lastError = "no socket yet"
    while monotonicNanos() < deadline {
        guard child.isRunning else { throw BenchError("\(child.name) exited (wait status \(child.exitStatus)) before its socket was ready") }
        if FileManager.default.fileExists(atPath: path) {
            do {
                let c = try UnixHTTPConnection(path: path)
                let r = try c.request("GET", probePath)
                if r.status > 0 { return }
            } catch {
                lastError = "\(error)"
            }
        }
        sleepNanos(50_000_000)
    }
    throw BenchError("\(child.name) socket \(path) not ready after \(Int(timeout)) s: \(lastError)")
}

/// Busy and total jiffies of the whole machine, from the first line of /proc/stat.
func machineCPUTicks() -> (busy: Double, total: Double)? {
    guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
        let line = text.split(separator: "\n").first, line.hasPrefix("cpu ")
    else { return nil }
    let v = line.split(separator: " ").dropFirst().compactMap { Double($0) }
    guard v.count >= 5 else { return nil }
    // user nice system idle iowait irq softirq steal (guest is already in user)
    let total = v.prefix(8).reduce(0, +)
    let idle = v[3] + v[4]
    return (total - idle, total)
}

func loadAverage() -> String {
    guard let text = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8) else { return "?" }
    return text.split(separator: " ").prefix(3).joined(separator: " ")
}

/// The file system type under a path (longest mount point in /proc/mounts), so a reader can tell
/// whether fsync reaches a disk.
func fileSystemType(_ path: String) -> String {
    guard let text = try? String(contentsOfFile: "/proc/mounts", encoding: .utf8) else { return "unknown file system" }
    var best = (length: -1, type: "unknown file system")
    for line in text.split(separator: "\n") {
        let parts = line.split(separator: " ")
        guard parts.count >= 3 else { continue }
        let mount = String(parts[1])
        let matches = mount == "/" || path == mount || path.hasPrefix(mount + "/")
        if matches && mount.count > best.length { best = (mount.count, String(parts[2])) }
    }
    return best.type == "tmpfs" ? "tmpfs (fsync is free there)" : best.type
}
