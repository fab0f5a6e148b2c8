// ProgSyncLocalAPIBench: load on progsyncd's local API over its Unix socket, next to the same
// load on a fixed nginx answer over a Unix socket (the floor of what HTTP over a Unix socket costs
// on this machine). Issue 3. Run in release:
//
//   swift build -c release --product ProgSyncLocalAPIBench && swift build -c release --product progsyncd
//   .build/release/ProgSyncLocalAPIBench [--progsyncd PATH] [--activities 100000] [--connections 16]
//                                        [--client-threads 1] [--duration 5] [--runs 3]
//
// Each connection carries one request at a time (closed loop, keep-alive, no pipelining). The
// client threads use poll(2) over non-blocking sockets by default: a thread per blocking
// connection costs ~2.5x the client CPU per request and, on 2 cores, made the client rather than
// nginx the limit (`--client-threads 0` still runs that way).
//
// Then (issue 14) GET while the daemon applies a partner's bulk: a second progsyncd holds
// `--bulk-changes` field changes (default 1M: 100k activities × 10 fields); this daemon restarts
// with it as a partner, pulls them over mutual TLS, and the GET load runs meanwhile. The line
// before the last is:
//   bulk-apply: GET p99 <X> ms during a <N>-change pull (target < 10 ms; GET p99 idle <Y> ms) ...
// The last line printed is:
//   local-api: get <N> req/s p99 <X> ms, nginx-static <M> req/s, ratio <N/M>
import Foundation
import Glibc
import ProgSyncBenchSupport
import ProgSyncCore

signal(SIGPIPE, SIG_IGN)

/// Unbuffered line output, so progress shows when stdout is a pipe or a file.
func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

// MARK: Options

struct Options {
    var progsyncd: String?
    var nginx = "/usr/sbin/nginx"
    var activities = 100_000
    var connections = 16
    var clientThreads = 1
    var duration = 5.0
    var runs = 3
    var warmup = 1.0
    var chunk = 20_000
    var idleSeconds = 3.0
    var keepTemp = false
    var bulkChanges = 1_000_000
    var bulkDuration = 3.0
}

let usage = """
    usage: ProgSyncLocalAPIBench [options]
      --progsyncd PATH     the daemon (default: progsyncd next to this executable)
      --nginx PATH         nginx binary (default /usr/sbin/nginx)
      --activities N       activities to import (default 100000)
      --connections C      keep-alive connections (default 16)
      --client-threads T   T > 0: the connections spread over T threads, non-blocking, poll(2)
                           (default 1: on 2 cores it leaves one core to the server);
                           0: one thread per connection with blocking I/O (costs ~2.5x the
                           client CPU per request, so it caps the nginx floor lower)
      --duration S         seconds measured per load (default 5)
      --warmup S           seconds of load before measuring, per load (default 1)
      --runs R             alternating runs of nginx / GET / PATCH; medians reported (default 3)
      --chunk N            records per POST /v1/import (default 20000)
      --keep-temp          leave the temporary folder (daemon log, nginx.conf) in place
      --bulk-changes N     field changes a partner holds for the GET-during-a-pull load, in
                           activities of 10 fields (default 1000000; 0 leaves the load out)
      --bulk-duration S    seconds measured during the pull (default 3, after 0.5 s warm-up)
    """

func parseOptions() -> Options {
    var o = Options()
    var args = CommandLine.arguments.dropFirst()[...]
    func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("ProgSyncLocalAPIBench: \(message)\n\(usage)\n".utf8))
        exit(64)
    }
    func value(_ name: String) -> String {
        guard let v = args.popFirst() else { fail("\(name) needs a value") }
        return v
    }
    func int(_ name: String, min: Int) -> Int {
        let v = value(name)
        guard let n = Int(v), n >= min else { fail("\(name) must be a whole number ≥ \(min), not \(v)") }
        return n
    }
    func double(_ name: String, min: Double) -> Double {
        let v = value(name)
        guard let n = Double(v), n >= min else { fail("\(name) must be a number ≥ \(min), not \(v)") }
        return n
    }
    while let arg = args.popFirst() {
        switch arg {
        case "--progsyncd": o.progsyncd = value(arg)
        case "--nginx": o.nginx = value(arg)
        case "--activities": o.activities = int(arg, min: 1)
        case "--connections": o.connections = int(arg, min: 1)
        case "--client-threads": o.clientThreads = int(arg, min: 0)
        case "--duration": o.duration = double(arg, min: 0.1)
        case "--warmup": o.warmup = double(arg, min: 0)
        case "--runs": o.runs = int(arg, min: 1)
        case "--chunk": o.chunk = int(arg, min: 1)
        case "--keep-temp": o.keepTemp = true
        case "--bulk-changes": o.bulkChanges = int(arg, min: 0)
        case "--bulk-duration": o.bulkDuration = double(arg, min: 0.1)
        case "-h", "--help":
            say(usage)
            exit(0)
        default: fail("unknown option \(arg)")
        }
    }
    return o
}

func ownDirectory() -> String {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    let exe = n > 0 ? String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
    return (exe as NSString).deletingLastPathComponent
}

// MARK: Formatting

func f(_ x: Double, _ decimals: Int) -> String { String(format: "%.\(decimals)f", x) }

func thousands(_ x: Double) -> String {
    let n = Int(x.rounded())
    let s = String(n)
    var out = ""
    for (i, c) in s.enumerated() {
        if i > 0 && (s.count - i) % 3 == 0 { out.append(",") }
        out.append(c)
    }
    return out
}

func median(_ values: [Double]) -> Double {
    let s = values.sorted()
    guard !s.isEmpty else { return 0 }
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func mb(_ kb: Int?) -> String { kb.map { f(Double($0) / 1024, 1) + " MB" } ?? "?" }

// MARK: Records

/// The i-th activity id: 1000 activities per result, 10 results per action line,
/// e.g. al1.r01.a00001 … al10.r10.a01000.
func activityID(_ i: Int) -> String {
    let r = i / 1000, al = r / 10 + 1, res = r % 10 + 1, num = i % 1000 + 1
    return "al\(al).r" + String(format: "%02d", res) + ".a" + String(format: "%05d", num)
}

let orgs = ["jenv", "politie", "om", "comensha", "ind", "szw", "inspectie-szw", "coa"]
let themes = ["Signalering", "Bescherming", "Opsporing", "Preventie", "Samenwerking"]
let topics = [
    "Training van eerstelijns medewerkers", "Bewustwordingscampagne", "Verbeteren van de registratie",
    "Pilot multidisciplinaire aanpak", "Onderzoek naar arbeidsuitbuiting", "Opvang van slachtoffers",
    "Informatie-uitwisseling tussen partners", "Handreiking voor gemeenten",
]

/// One activity as the import API takes it, with a realistic spread of fields.
func activityJSON(_ i: Int, into out: inout String) {
    let r = i / 1000, al = r / 10 + 1, res = r % 10 + 1, num = i % 1000 + 1
    var rng = SplitMix64(seed: UInt64(i) &* 31 &+ 7)
    let status = statusCodes[Int(rng.next() % UInt64(statusCodes.count))]
    let owner = orgs[Int(rng.next() % UInt64(orgs.count))]
    let partner1 = orgs[Int(rng.next() % UInt64(orgs.count))]
    let partner2 = orgs[Int(rng.next() % UInt64(orgs.count))]
    let topic = topics[Int(rng.next() % UInt64(topics.count))]
    let theme = themes[Int(rng.next() % UInt64(themes.count))]
    let month = Int(rng.next() % 12) + 1, day = Int(rng.next() % 28) + 1
    out += "{\"id\":\"\(activityID(i))\",\"kind\":\"activity\",\"result\":\"al\(al).r"
    out += String(format: "%02d", res)
    out += "\",\"number\":\(num),\"title\":\"\(topic) (\(num))\",\"theme\":\"\(theme)\",\"status\":\"\(status)\","
    out += "\"owner\":\"\(owner)\",\"partners\":[\"\(partner1)\",\"\(partner2)\"],"
    out += "\"due\":\"2022-" + String(format: "%02d-%02d", month, day) + "\","
    out += "\"explanation\":\"\(topic) binnen actielijn \(al), resultaat \(res). De partners stemmen de aanpak af "
    out += "en rapporteren elk kwartaal over de voortgang; de planning wordt bijgesteld waar dat nodig is.\"}"
}

// MARK: The run

final class Cleanup {
    var children: [ChildProcess] = []
    var tempDirectory: String?
    var keepTemp = false

    func run() {
        for child in children.reversed() {
            let how = child.stop()
            say("stopped \(child.name) (pid \(child.pid)): \(how)")
        }
        children = []
        if let dir = tempDirectory {
            if keepTemp {
                say("kept temporary folder \(dir)")
            } else {
                try? FileManager.default.removeItem(atPath: dir)
            }
            tempDirectory = nil
        }
    }
}

struct Row {
    var label: String
    var results: [LoadResult] = []
}

/// CPU use over one load, in % of one core: the server, this program, and everything else on the machine.
struct CPUUse {
    var server: Double?
    var client: Double
    var other: Double?
}

func describe(_ r: LoadResult, cpu: CPUUse) -> String {
    var s = "\(thousands(r.requestsPerSecond)) req/s  p50 \(f(r.p50ms, 3)) ms  p99 \(f(r.p99ms, 3)) ms  max \(f(r.maxms, 2)) ms"
    s += "  non-2xx \(r.non2xx)  io-errors \(r.ioErrors)  cpu:"
    if let server = cpu.server { s += " server \(Int(server.rounded()))%" }
    s += " client \(Int(cpu.client.rounded()))%"
    if let other = cpu.other { s += " other \(Int(max(0, other).rounded()))%" }
    return s
}

func measure(_ spec: LoadSpec, serverPID: pid_t) throws -> (LoadResult, CPUUse) {
    let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))
    let server0 = processCPUSeconds(pid: serverPID), client0 = cpuSecondsOfThisProcess(), machine0 = machineCPUTicks()
    let t0 = monotonicNanos()
    let result = try runLoad(spec)
    let t1 = monotonicNanos()
    let server1 = processCPUSeconds(pid: serverPID), client1 = cpuSecondsOfThisProcess(), machine1 = machineCPUTicks()
    let wall = Double(t1 - t0) / 1e9
    var cpu = CPUUse(server: nil, client: (client1 - client0) / wall * 100, other: nil)
    if let server0, let server1 { cpu.server = (server1 - server0) / wall * 100 }
    if let machine0, let machine1, let server = cpu.server {
        let busy = (machine1.busy - machine0.busy) / ticksPerSecond / wall * 100
        cpu.other = busy - server - cpu.client
    }
    return (result, cpu)
}

func benchmark(_ o: Options, cleanup: Cleanup) throws -> Int32 {
    let progsyncd = o.progsyncd ?? ownDirectory() + "/progsyncd"
    guard FileManager.default.isExecutableFile(atPath: progsyncd) else {
        throw BenchError("no progsyncd at \(progsyncd); build it (swift build -c release --product progsyncd) or pass --progsyncd")
    }
    guard FileManager.default.isExecutableFile(atPath: o.nginx) else {
        throw BenchError("no nginx at \(o.nginx) (Debian: apt-get install nginx-light) or pass --nginx")
    }

    var template = Array("/tmp/progsync-apibench.XXXXXX".utf8CString)
    guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
        throw BenchError("mkdtemp failed: \(String(cString: strerror(errno)))")
    }
    let temp = String(cString: made)
    cleanup.tempDirectory = temp
    cleanup.keepTemp = o.keepTemp
    let dataDir = temp + "/data", nginxDir = temp + "/nginx"
    try FileManager.default.createDirectory(atPath: nginxDir, withIntermediateDirectories: true)

    let cores = sysconf(Int32(_SC_NPROCESSORS_ONLN))
    let startLoad = loadAverage()
    let client = o.clientThreads == 0 ? "one thread each, blocking I/O" : "over \(min(o.clientThreads, o.connections)) thread(s) with poll(2)"
    say("ProgSyncLocalAPIBench: \(o.connections) keep-alive connections (\(client)), \(f(o.warmup, 1)) s warm-up + "
        + "\(f(o.duration, 1)) s measured per load, \(o.runs) run(s), \(cores) CPU core(s)")
    say("progsyncd: \(progsyncd)")
    say("temporary folder: \(temp) on \(fileSystemType(temp))")

    // The daemon.
    let daemon = try ChildProcess(name: "progsyncd", executable: progsyncd,
                                  arguments: ["--data-dir", dataDir, "--empty"], logPath: temp + "/progsyncd.log")
    cleanup.children.append(daemon)
    let socket = dataDir + "/progsync.sock"
    try waitForSocket(socket, child: daemon, probePath: "/v1/status", timeout: 60)
    say("progsyncd pid \(daemon.pid) listening on \(socket); VmRSS at start \(mb(procStatusKB(pid: daemon.pid, field: "VmRSS")))")

    // Import the activities.
    let api = try UnixHTTPConnection(path: socket)
    let importStart = monotonicNanos()
    var imported = 0
    while imported < o.activities {
        let start = imported, end = min(imported + o.chunk, o.activities)
        var body = "{\"records\":["
        body.reserveCapacity((end - imported) * 520)
        for i in imported..<end {
            if i > imported { body += "," }
            activityJSON(i, into: &body)
        }
        body += "]}"
        let bytes = Array(body.utf8)
        let t0 = monotonicNanos()
        let answer = try api.request("POST", "/v1/import", body: bytes)
        let seconds = Double(monotonicNanos() - t0) / 1e9
        guard answer.status == 200 else {
            throw BenchError("import of records \(imported)..<\(end) failed: HTTP \(answer.status) \(String(decoding: answer.body.prefix(500), as: UTF8.self))")
        }
        let reply = try? JSONParser.parse(answer.body)
        let commits = reply?["commits"]?.intValue.map(String.init) ?? "?"
        imported = end
        say("imported \(imported)/\(o.activities) activities (\(f(Double(bytes.count) / 1_048_576, 1)) MB body, "
            + "\(commits) commits, \(f(seconds, 2)) s, \(thousands(Double(end - start) / seconds)) records/s)")
    }
    let importSeconds = Double(monotonicNanos() - importStart) / 1e9
    say("import done: \(o.activities) activities in \(f(importSeconds, 1)) s")

    // Check the records are there, and see how big a typical answer is.
    let ids = (0..<o.activities).map { Array(activityID($0).utf8) }
    var rng = SplitMix64(seed: 42)
    var bodyBytes = 0, headerBytes = 0, getChunked = false
    let samples = 50
    for k in 0..<samples {
        let i = k == 0 ? 0 : (k == 1 ? o.activities - 1 : Int(rng.next() % UInt64(o.activities)))
        let answer = try api.request("GET", "/v1/records/" + activityID(i))
        guard answer.status == 200 else {
            throw BenchError("GET /v1/records/\(activityID(i)) after import: HTTP \(answer.status) \(String(decoding: answer.body.prefix(300), as: UTF8.self))")
        }
        bodyBytes += answer.body.count
        getChunked = getChunked || answer.info.chunked
        headerBytes += answer.info.headerLength
    }
    let typicalBody = bodyBytes / samples, typicalHeaders = headerBytes / samples
    let patchProbe = try api.request("PATCH", "/v1/records/" + activityID(0), body: Array("{\"status\":\"delayed\"}".utf8))
    guard patchProbe.status == 200 else {
        throw BenchError("PATCH probe: HTTP \(patchProbe.status) \(String(decoding: patchProbe.body.prefix(300), as: UTF8.self))")
    }
    let getFraming = "GET " + (getChunked ? "chunked" : "content-length") + ", PATCH " + (patchProbe.info.chunked ? "chunked" : "content-length")
    say("record answer: \(typicalBody) bytes body + \(typicalHeaders) bytes headers on average (\(samples) GETs); "
        + "PATCH answer \(patchProbe.body.count) bytes; framing \(getFraming)")

    // Idle memory.
    sleepNanos(UInt64(o.idleSeconds * 1e9))
    let idleRSS = procStatusKB(pid: daemon.pid, field: "VmRSS")
    let idleHWM = procStatusKB(pid: daemon.pid, field: "VmHWM")
    let idleAnon = procStatusKB(pid: daemon.pid, field: "RssAnon"), idleFile = procStatusKB(pid: daemon.pid, field: "RssFile")
    let dbSize = (try? FileManager.default.contentsOfDirectory(atPath: dataDir))?.reduce(0) { sum, name in
        sum + ((try? FileManager.default.attributesOfItem(atPath: dataDir + "/" + name)[.size] as? Int) ?? 0)
    } ?? 0
    say("progsyncd idle \(f(o.idleSeconds, 0)) s after import: VmRSS \(mb(idleRSS)), VmHWM \(mb(idleHWM)), "
        + "threads \(processThreadCount(pid: daemon.pid).map(String.init) ?? "?"), data folder \(f(Double(dbSize) / 1_048_576, 1)) MB")

    // nginx with a fixed answer of the same size as a record answer.
    let padding = max(0, typicalBody - "{\"id\":\"static\",\"fields\":{\"note\":\"\"}}".utf8.count)
    let filler = String(repeating: "abcdefghij", count: padding / 10 + 1).prefix(padding)
    let staticBody = "{\"id\":\"static\",\"fields\":{\"note\":\"\(filler)\"}}"
    let nginxSocket = nginxDir + "/nginx.sock"
    let conf = """
        daemon off;
        master_process off;
        worker_processes 1;
        error_log \(nginxDir)/error.log;
        pid \(nginxDir)/nginx.pid;
        events { worker_connections 1024; }
        http {
            access_log off;
            client_body_temp_path \(nginxDir)/client_body;
            proxy_temp_path \(nginxDir)/proxy;
            fastcgi_temp_path \(nginxDir)/fastcgi;
            uwsgi_temp_path \(nginxDir)/uwsgi;
            scgi_temp_path \(nginxDir)/scgi;
            keepalive_requests 1000000000;
            keepalive_timeout 300s;
            server {
                listen unix:\(nginxSocket);
                location / {
                    default_type application/json;
                    return 200 '\(staticBody)';
                }
            }
        }

        """
    try conf.write(toFile: nginxDir + "/nginx.conf", atomically: true, encoding: .utf8)
    let nginx = try ChildProcess(name: "nginx", executable: o.nginx,
                                 arguments: ["-c", nginxDir + "/nginx.conf", "-p", nginxDir + "/"], logPath: nginxDir + "/stderr.log")
    cleanup.children.append(nginx)
    try waitForSocket(nginxSocket, child: nginx, probePath: "/v1/records/" + activityID(0), timeout: 20)
    let nginxProbe = try UnixHTTPConnection(path: nginxSocket).request("GET", "/v1/records/" + activityID(0))
    guard nginxProbe.status == 200 else { throw BenchError("nginx probe: HTTP \(nginxProbe.status)") }
    say("nginx pid \(nginx.pid): \(o.nginx), worker_processes 1, master_process off, fixed answer "
        + "\(nginxProbe.body.count) bytes body + \(nginxProbe.info.headerLength) bytes headers, "
        + "framing \(nginxProbe.info.chunked ? "chunked" : "content-length")")

    // Alternate the loads.
    var rows = [Row(label: "nginx-static GET"), Row(label: "progsyncd GET"), Row(label: "progsyncd PATCH")]
    let loads: [(socket: String, kind: RequestKind, pid: pid_t)] = [
        (nginxSocket, .get, nginx.pid), (socket, .get, daemon.pid), (socket, .patchStatus, daemon.pid),
    ]
    var serverCPU: [String: [Double]] = [:]
    var otherCPU: [Double] = []
    var invalid: [String] = []
    func pad(_ s: String) -> String { s.padding(toLength: 17, withPad: " ", startingAt: 0) }
    for run in 1...o.runs {
        for (index, load) in loads.enumerated() {
            let spec = LoadSpec(socketPath: load.socket, kind: load.kind, ids: ids, connections: o.connections,
                                clientThreads: o.clientThreads,
                                warmupSeconds: o.warmup, durationSeconds: o.duration,
                                seed: UInt64(run) &* 1_000_003 &+ UInt64(index))
            let (result, cpu) = try measure(spec, serverPID: load.pid)
            rows[index].results.append(result)
            let label = rows[index].label
            if let server = cpu.server { serverCPU[label, default: []].append(server) }
            if let other = cpu.other { otherCPU.append(other) }
            say("run \(run)/\(o.runs)  \(pad(label)) \(describe(result, cpu: cpu))")
            if result.non2xx > 0 || result.ioErrors > 0 || result.requests == 0 {
                let statuses = result.statusCounts.sorted { $0.key < $1.key }.map { "\($0.key)x\($0.value)" }.joined(separator: " ")
                invalid.append("run \(run) \(label): \(result.non2xx) non-2xx (\(statuses)), \(result.ioErrors) I/O errors"
                    + (result.firstError.map { "; first: \($0)" } ?? ""))
            }
            guard daemon.isRunning else {
                throw BenchError("progsyncd exited during the load (wait status \(daemon.exitStatus)); see \(temp)/progsyncd.log")
            }
        }
    }
    let afterRSS = procStatusKB(pid: daemon.pid, field: "VmRSS")
    let afterAnon = procStatusKB(pid: daemon.pid, field: "RssAnon"), afterFile = procStatusKB(pid: daemon.pid, field: "RssFile")
    let afterHWM = procStatusKB(pid: daemon.pid, field: "VmHWM")
    let bulk = o.bulkChanges > 0
        ? try bulkApply(o, progsyncd: progsyncd, temp: temp, dataDir: dataDir, daemon: daemon, ids: ids, cleanup: cleanup) : nil
    if let r = bulk?.result, r.non2xx > 0 || r.ioErrors > 0 || r.requests == 0 {
        invalid.append("bulk-apply GET: \(r.non2xx) non-2xx, \(r.ioErrors) I/O errors" + (r.firstError.map { "; first: \($0)" } ?? ""))
    }
    cleanup.run()

    say("median of \(o.runs) run(s):")
    var medians: [String: (rps: Double, p50: Double, p99: Double)] = [:]
    for row in rows {
        let m = (rps: median(row.results.map(\.requestsPerSecond)), p50: median(row.results.map(\.p50ms)), p99: median(row.results.map(\.p99ms)))
        medians[row.label] = m
        let cpu = serverCPU[row.label].map { "  server-cpu \(Int(median($0).rounded()))%" } ?? ""
        say("  \(pad(row.label)) \(thousands(m.rps)) req/s  p50 \(f(m.p50, 3)) ms  p99 \(f(m.p99, 3)) ms\(cpu)")
    }
    for line in invalid { say("INVALID: \(line)") }
    if invalid.isEmpty { say("errors: none (every answer 2xx, no I/O errors)") }
    let busiest = otherCPU.max() ?? 0
    say("machine: load average \(startLoad) at start, \(loadAverage()) at end; CPU used by other processes during the loads: "
        + "median \(Int(max(0, median(otherCPU)).rounded()))%, max \(Int(max(0, busiest).rounded()))% of one core"
        + (busiest > 25 ? " (noisy: the figures are lower than on an idle machine)" : ""))

    say("memory: progsyncd VmRSS idle with \(o.activities) activities loaded: \(mb(idleRSS)) "
        + "(RssAnon \(mb(idleAnon)), RssFile \(mb(idleFile)), VmHWM \(mb(idleHWM)); after the load runs: VmRSS \(mb(afterRSS)), "
        + "RssAnon \(mb(afterAnon)), RssFile \(mb(afterFile)), VmHWM \(mb(afterHWM)))")

    let get = medians["progsyncd GET"]!, patch = medians["progsyncd PATCH"]!, floor = medians["nginx-static GET"]!
    say("patch: \(Int(patch.rps.rounded())) req/s p50 \(f(patch.p50, 2)) ms p99 \(f(patch.p99, 2)) ms")
    if let bulk {
        let r = bulk.result
        say("bulk-apply: GET p99 \(f(r.p99ms, 2)) ms during a \(thousands(Double(bulk.changes)))-change pull (target < 10 ms; "
            + "GET p99 idle \(f(get.p99, 2)) ms), \(thousands(r.requestsPerSecond)) req/s, max \(f(r.maxms, 1)) ms; "
            + "pull \(bulk.progress) while measured; \(bulk.rate)")
    }
    let ratio = floor.rps > 0 ? get.rps / floor.rps : 0
    say("local-api: get \(Int(get.rps.rounded())) req/s p99 \(f(get.p99, 2)) ms, nginx-static \(Int(floor.rps.rounded())) req/s, ratio \(f(ratio, 3))")
    return invalid.isEmpty ? 0 : 2
}

// MARK: GET during a bulk apply

struct BulkApplyResult {
    var result: LoadResult
    var changes: Int
    /// How far the pull was when the measured window began and ended.
    var progress: String
    /// The pull's rate, or why there is none.
    var rate: String
}

/// A second node (the "bulk source") loaded with `o.bulkChanges` field changes; the measured daemon
/// restarts with it as a partner (mutual TLS on loopback) and the GET load runs while it pulls.
func bulkApply(_ o: Options, progsyncd: String, temp: String, dataDir: String, daemon: ChildProcess, ids: [[UInt8]],
               cleanup: Cleanup) throws -> BulkApplyResult {
    let activities = max(1, o.bulkChanges / 10)
    let sourceDir = temp + "/bulk-source"
    let initLog = temp + "/bulk-source-init.log"
    let initRun = try ChildProcess(name: "progsyncd init", executable: progsyncd,
                                   arguments: ["init", "--data-dir", sourceDir, "--org", "jenv", "--name", "bulk-source"], logPath: initLog)
    while initRun.isRunning { sleepNanos(20_000_000) }
    let initText = (try? String(contentsOfFile: initLog, encoding: .utf8)) ?? ""
    guard let pinLine = initText.split(separator: "\n").first(where: { $0.hasPrefix("certificate:") }),
        let identity = FileManager.default.contents(atPath: sourceDir + "/identity.json").flatMap({ try? JSONParser.parse(Array($0)) }),
        let sourceID = identity["id"]?.stringValue, let publicKey = identity["publicKey"]?.stringValue
    else { throw BenchError("progsyncd init of the bulk source failed: \(initText.prefix(500))") }
    let pin = pinLine.dropFirst("certificate:".count).trimmingCharacters(in: .whitespaces)
    // The measured node's own registry (zero-config: its org coordinates) plus the source, with an address.
    let port = freeLoopbackPort()
    guard let registryData = FileManager.default.contents(atPath: dataDir + "/registry.json"),
        case .object(var registry) = try JSONParser.parse(Array(registryData)),
        case .array(var orgList)? = registry["orgs"], case .object(var org)? = orgList.first, case .array(var nodes)? = org["nodes"]
    else { throw BenchError("cannot read \(dataDir)/registry.json") }
    nodes.append(.object(["id": .string(sourceID), "name": "bulk-source", "publicKey": .string(publicKey),
                          "certificatePin": .string(pin), "address": .string("https://127.0.0.1:\(port)")]))
    org["nodes"] = .array(nodes)
    orgList[0] = .object(org)
    registry["orgs"] = .array(orgList)
    let registryText = JSONValue.object(registry).prettyString() + "\n"
    try registryText.write(toFile: sourceDir + "/registry.json", atomically: true, encoding: .utf8)

    let quiet = ["PROGSYNC_RECONCILE_SCHEDULE": "off"]
    let source = try ChildProcess(name: "bulk source", executable: progsyncd, arguments: ["--data-dir", sourceDir, "--empty"],
                                  logPath: temp + "/bulk-source.log",
                                  environment: quiet.merging(["PROGSYNC_PEERS_LISTEN": "127.0.0.1:\(port)"]) { $1 })
    cleanup.children.append(source)
    try waitForSocket(sourceDir + "/progsync.sock", child: source, probePath: "/v1/status", timeout: 60)
    let sourceAPI = try UnixHTTPConnection(path: sourceDir + "/progsync.sock")
    let loadStart = monotonicNanos()
    var done = 0
    while done < activities {
        let end = min(done + o.chunk, activities)
        var body = "{\"records\":["
        // Other ids than the measured node's own (al11… for the default sizes).
        for i in done..<end {
            if i > done { body += "," }
            activityJSON(o.activities + i, into: &body)
        }
        body += "]}"
        let answer = try sourceAPI.request("POST", "/v1/import", body: Array(body.utf8))
        guard answer.status == 200 else { throw BenchError("bulk source import: HTTP \(answer.status) \(String(decoding: answer.body.prefix(300), as: UTF8.self))") }
        done = end
    }
    func ownSeq(_ api: UnixHTTPConnection) throws -> Int64 {
        let status = try JSONParser.parse(try api.request("GET", "/v1/status").body)
        return status["versionVector"]?[sourceID]?.intValue ?? 0
    }
    let total = try ownSeq(sourceAPI)
    say("bulk source pid \(source.pid): \(activities) activities (\(thousands(Double(activities * 10))) field changes, \(total) commits) "
        + "loaded in \(f(Double(monotonicNanos() - loadStart) / 1e9, 1)) s; restarting progsyncd with it as a partner")

    // Restart the measured daemon with the source as its partner: it pulls at once.
    let stopped = daemon.stop()
    say("stopped progsyncd (pid \(daemon.pid)): \(stopped)")
    try registryText.write(toFile: dataDir + "/registry.json", atomically: true, encoding: .utf8)
    let restarted = try ChildProcess(name: "progsyncd", executable: progsyncd, arguments: ["--data-dir", dataDir, "--empty"],
                                     logPath: temp + "/progsyncd.log", environment: quiet)
    cleanup.children.append(restarted)
    let socket = dataDir + "/progsync.sock"
    try waitForSocket(socket, child: restarted, probePath: "/v1/status", timeout: 60)
    let api = try UnixHTTPConnection(path: socket)
    let started = monotonicNanos()
    let atStart = try ownSeq(api)
    let spec = LoadSpec(socketPath: socket, kind: .get, ids: ids, connections: o.connections, clientThreads: o.clientThreads,
                        warmupSeconds: 0.5, durationSeconds: o.bulkDuration, seed: 4242)
    let (result, cpu) = try measure(spec, serverPID: restarted.pid)
    let atEnd = try ownSeq(api)
    say("bulk-apply GET    \(describe(result, cpu: cpu))")
    func percent(_ n: Int64) -> String { "\(Int((Double(n) / Double(max(1, total)) * 100).rounded()))%" }
    let progress = "\(percent(atStart)) → \(percent(atEnd)) applied"
    guard atEnd < total else {
        return BulkApplyResult(result: result, changes: activities * 10, progress: progress,
                               rate: "INCOMPLETE: the pull ended before the measurement did (use a larger --bulk-changes)")
    }
    // The rest of the pull, unloaded, for its rate.
    while try ownSeq(api) < total {
        guard restarted.isRunning, monotonicNanos() - started < 600_000_000_000 else { throw BenchError("the pull did not finish within 10 min") }
        sleepNanos(100_000_000)
    }
    let seconds = Double(monotonicNanos() - started) / 1e9
    return BulkApplyResult(result: result, changes: activities * 10, progress: progress,
                           rate: "whole pull \(f(seconds, 1)) s from the restart, \(thousands(Double(activities * 10) / seconds)) changes/s")
}

let options = parseOptions()
let cleanup = Cleanup()
do {
    let code = try benchmark(options, cleanup: cleanup)
    exit(code)
} catch {
    cleanup.run()
    FileHandle.standardError.write(Data("ProgSyncLocalAPIBench: \(error)\n".utf8))
    exit(1)
}
