import GRDB

/// SQLite failed for the disk, not for the data: the file system is full (SQLITE_FULL) or
/// reads or writes failed (SQLITE_IOERR). The transaction was rolled back whole, so the
/// replica and its in-memory state are as before, and the same write can succeed once the
/// disk is fixed.
public struct StorageFailure: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable { case full, io }
    public var kind: Kind
    public var description: String

    /// nil when `error` is anything else.
    public init?(_ error: any Error) {
        guard let error = error as? DatabaseError else { return nil }
        switch error.resultCode {
        case .SQLITE_FULL: kind = .full
        case .SQLITE_IOERR: kind = .io
        default: return nil
        }
        description = "SQLite error \(error.extendedResultCode.rawValue): \(error.message ?? "\(error.resultCode)")"
    }
}
