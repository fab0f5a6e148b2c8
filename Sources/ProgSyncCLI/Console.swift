import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Where the commands write. Output is built as whole strings and written at once.
enum Console {
    static func out(_ text: String) {
        write(text, to: FileHandle.standardOutput)
    }

    static func err(_ text: String) {
        write(text, to: FileHandle.standardError)
    }

    /// Writes `text` followed by a newline unless it already ends with one (or is empty).
    static func outLine(_ text: String) {
        out(text.isEmpty || text.hasSuffix("\n") ? text : text + "\n")
    }

    static func errLine(_ text: String) {
        err(text.hasSuffix("\n") ? text : text + "\n")
    }

    private static func write(_ text: String, to handle: FileHandle) {
        guard !text.isEmpty else { return }
        handle.write(Data(text.utf8))
    }

    static var stdoutIsTerminal: Bool { isatty(STDOUT_FILENO) == 1 }
    static var stderrIsTerminal: Bool { isatty(STDERR_FILENO) == 1 }

    /// The width of the terminal on stdout, or nil when stdout is not a terminal.
    /// `COLUMNS` wins when set to a number.
    static var terminalWidth: Int? {
        if let columns = ProcessInfo.processInfo.environment["COLUMNS"], let n = Int(columns), n > 0 {
            return n
        }
        guard stdoutIsTerminal else { return nil }
        var size = winsize()
        #if canImport(Glibc) || canImport(Musl)
        let result = ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size)
        #else
        let result = ioctl(STDOUT_FILENO, TIOCGWINSZ, &size)
        #endif
        guard result == 0, size.ws_col > 0 else { return nil }
        return Int(size.ws_col)
    }
}

/// Progress lines on stderr: rewritten in place on a terminal, a few plain lines otherwise.
struct Progress {
    let enabled: Bool
    private let terminal = Console.stderrIsTerminal
    private var lastLength = 0

    init(enabled: Bool) {
        self.enabled = enabled
    }

    /// A transient line (replaced by the next update on a terminal; skipped otherwise).
    mutating func update(_ text: String) {
        guard enabled, terminal else { return }
        let padding = String(repeating: " ", count: max(0, lastLength - text.count))
        Console.err("\r" + text + padding)
        lastLength = text.count
    }

    /// A line that stays.
    mutating func line(_ text: String) {
        guard enabled else { return }
        if terminal, lastLength > 0 {
            let padding = String(repeating: " ", count: max(0, lastLength - text.count))
            Console.err("\r" + text + padding + "\n")
        } else {
            Console.err(text + "\n")
        }
        lastLength = 0
    }
}
