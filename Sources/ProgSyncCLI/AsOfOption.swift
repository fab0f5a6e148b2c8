import ArgumentParser
import ProgSyncCore

/// `--as-of`: the programme as it stood at a moment, computed by the daemon from the signed log.
struct AsOfOption: ParsableArguments {
    @Option(
        name: .customLong("as-of"),
        help: ArgumentHelp(
            "Show the records as they stood then: a date (the end of that day, Amsterdam time) or an RFC 3339 instant.",
            valueName: "date|instant"))
    var text: String?

    func validate() throws {
        if let text {
            do { _ = try AsOf(parsing: text) } catch { throw ValidationError("--as-of: \(error)") }
        }
    }

    /// The query item of `GET /v1/records` and `GET /v1/records/{id}`.
    var queryItems: [(String, String)] { text.map { [("asOf", $0)] } ?? [] }
}
