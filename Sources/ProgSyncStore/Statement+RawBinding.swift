import GRDB
import GRDBSQLite

/// Binds values straight into the SQLite statement. The merge hot path runs millions of times per
/// bulk sync; GRDB's `StatementArguments` boxing was an eighth of its cost.
extension Statement {
    static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

    func bind(_ index: Int32, _ text: String) {
        var text = text
        _ = text.withUTF8 { sqlite3_bind_text(sqliteStatement, index, $0.baseAddress, Int32($0.count), Self.transient) }
    }

    func bind(_ index: Int32, text bytes: [UInt8]) {
        _ = bytes.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) {
                sqlite3_bind_text(sqliteStatement, index, $0.baseAddress, Int32($0.count), Self.transient)
            }
        }
    }

    func bind(_ index: Int32, blob bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { sqlite3_bind_blob(sqliteStatement, index, $0.baseAddress, Int32($0.count), Self.transient) }
    }

    func bind(_ index: Int32, _ value: Int64) {
        sqlite3_bind_int64(sqliteStatement, index, value)
    }
}

extension Statement {
    /// Steps a statement bound with `bind`, then resets it (bindings stay for the next use).
    func run() throws {
        let code = sqlite3_step(sqliteStatement)
        if code != SQLITE_DONE && code != SQLITE_ROW {
            let message = String(cString: sqlite3_errmsg(sqlite3_db_handle(sqliteStatement)))
            sqlite3_reset(sqliteStatement)
            throw DatabaseError(resultCode: ResultCode(rawValue: code), message: message, sql: sql)
        }
        sqlite3_reset(sqliteStatement)
    }
}
