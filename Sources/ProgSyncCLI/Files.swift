import Foundation

/// Reading input files and writing output files, with errors a person can act on.
enum Files {
    /// The bytes of `path`, or of stdin when `path` is `-`.
    static func read(_ path: String) throws -> [UInt8] {
        if path == "-" {
            return [UInt8](FileHandle.standardInput.readDataToEndOfFile())
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw CLIError.failure("\(path): no such file")
        }
        guard !isDirectory.boolValue else { throw CLIError.failure("\(path) is a folder, not a file") }
        do {
            return [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw CLIError.failure("cannot read \(path): \(error.localizedDescription)")
        }
    }

    /// Writes `bytes` to `path` atomically (a temporary file renamed into place), or to stdout
    /// when `path` is nil or `-`.
    static func write(_ bytes: [UInt8], to path: String?) throws {
        guard let path, path != "-" else {
            FileHandle.standardOutput.write(Data(bytes))
            return
        }
        do {
            try Data(bytes).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw CLIError.failure("cannot write \(path): \(error.localizedDescription)")
        }
    }

    /// Today's local date, `YYYY-MM-DD`.
    static func today() -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.dateFormat = "yyyy-MM-dd"
        return formatter.string(from: Date())
    }
}
