/// One data line of a CSV file: its fields and the line number (1-based) where it starts.
public struct CSVRow: Sendable, Equatable {
    public var line: Int
    public var fields: [String]

    public init(line: Int, fields: [String]) {
        self.line = line
        self.fields = fields
    }
}

/// A CSV text that could not be read; `line` is 1-based.
public struct CSVError: Error, CustomStringConvertible, Sendable, Equatable {
    public var line: Int
    public var message: String

    public init(line: Int, message: String) {
        self.line = line
        self.message = message
    }

    public var description: String { "line \(line): \(message)" }
}

/// RFC 4180 CSV as Excel reads and writes it: fields with the delimiter, a quote or a line
/// break are quoted and quotes inside doubled; CRLF, LF or CR end a line; an optional UTF-8
/// byte order mark and an optional Excel `sep=;` first line are accepted.
public enum CSV {
    public static let byteOrderMark: [UInt8] = [0xEF, 0xBB, 0xBF]

    /// Parses `bytes`. The delimiter is `,` unless given, announced by a `sep=` line, or the
    /// first line holds more `;` than `,` outside quotes (Excel with a Dutch locale).
    /// Blank lines are skipped.
    public static func parse(_ bytes: [UInt8], delimiter: UInt8? = nil) throws(CSVError) -> [CSVRow] {
        var index = 0
        if bytes.starts(with: byteOrderMark) { index = 3 }
        var line = 1
        var sep = delimiter ?? UInt8(ascii: ",")
        if let announced = announcedDelimiter(bytes, from: index) {
            sep = announced.delimiter
            index = announced.next
            line = 2
        } else if delimiter == nil {
            sep = guessDelimiter(bytes, from: index)
        }

        let quote = UInt8(ascii: "\"")
        let cr: UInt8 = 0x0D
        let lf: UInt8 = 0x0A
        var rows: [CSVRow] = []
        let count = bytes.count

        while index < count {
            let rowLine = line
            var fields: [String] = []
            var rowDone = false
            while !rowDone {
                var field: [UInt8] = []
                let fieldLine = line
                if index < count, bytes[index] == quote {
                    index += 1
                    var closed = false
                    while index < count {
                        let b = bytes[index]
                        if b == quote {
                            if index + 1 < count, bytes[index + 1] == quote {
                                field.append(quote)
                                index += 2
                                continue
                            }
                            index += 1
                            closed = true
                            break
                        }
                        if b == lf || (b == cr && !(index + 1 < count && bytes[index + 1] == lf)) { line += 1 }
                        field.append(b)
                        index += 1
                    }
                    guard closed else {
                        throw CSVError(line: fieldLine, message: "a quoted field is never closed (missing \")")
                    }
                    if index < count, bytes[index] != sep, bytes[index] != cr, bytes[index] != lf {
                        throw CSVError(
                            line: line,
                            message: "unexpected text after a closing quote (quotes inside a quoted field must be doubled: \"\")"
                        )
                    }
                } else {
                    while index < count {
                        let b = bytes[index]
                        if b == sep || b == cr || b == lf { break }
                        field.append(b)
                        index += 1
                    }
                }
                guard let text = String(validating: field, as: UTF8.self) else {
                    throw CSVError(line: fieldLine, message: "text is not valid UTF-8 (save the file as \"CSV UTF-8\")")
                }
                fields.append(text)
                if index >= count {
                    rowDone = true
                } else if bytes[index] == sep {
                    index += 1
                } else {
                    if bytes[index] == cr, index + 1 < count, bytes[index + 1] == lf { index += 1 }
                    index += 1
                    line += 1
                    rowDone = true
                }
            }
            if fields.count == 1, fields[0].isEmpty { continue }  // blank line
            rows.append(CSVRow(line: rowLine, fields: fields))
        }
        return rows
    }

    /// Excel's `sep=X` first line.
    static func announcedDelimiter(_ bytes: [UInt8], from start: Int) -> (delimiter: UInt8, next: Int)? {
        let prefix = Array("sep=".utf8)
        guard bytes.count >= start + 5, Array(bytes[start..<start + 4]).map({ $0 | 0x20 }) == prefix else { return nil }
        let d = bytes[start + 4]
        var next = start + 5
        if next < bytes.count {
            guard bytes[next] == 0x0D || bytes[next] == 0x0A else { return nil }
            if bytes[next] == 0x0D { next += 1 }
            if next < bytes.count, bytes[next] == 0x0A { next += 1 }
        }
        return (d, next)
    }

    static func guessDelimiter(_ bytes: [UInt8], from start: Int) -> UInt8 {
        var commas = 0
        var semicolons = 0
        var inQuotes = false
        var i = start
        while i < bytes.count {
            let b = bytes[i]
            if b == UInt8(ascii: "\"") {
                inQuotes.toggle()
            } else if !inQuotes {
                if b == 0x0A || b == 0x0D { break }
                if b == UInt8(ascii: ",") { commas += 1 }
                if b == UInt8(ascii: ";") { semicolons += 1 }
            }
            i += 1
        }
        return semicolons > commas ? UInt8(ascii: ";") : UInt8(ascii: ",")
    }

    /// What a cell may start with that Excel or Calc would read as a formula (`=`, `+`, `-`,
    /// `@`, and tab or CR, which Excel skips before one), plus `'`, the guard itself.
    static let guardedStarts: Set<Character> = ["=", "+", "-", "@", "\t", "\r", "\r\n", "'"]

    /// A cell a spreadsheet keeps as text: one that starts like a formula gets a leading `'`,
    /// which Excel and Calc show and save back as part of the text. Because a cell that already
    /// starts with `'` gets one too, `unguarded` undoes it exactly.
    public static func guarded(_ cell: String) -> String {
        guard let first = cell.first, guardedStarts.contains(first) else { return cell }
        return "'" + cell
    }

    /// The cell as it was before `guarded`; only for files the exporter wrote (they carry the
    /// basis column), since a hand-made sheet has no guards to take off.
    public static func unguarded(_ cell: String) -> String {
        cell.first == "'" ? String(cell.dropFirst()) : cell
    }

    /// One field as it appears in the file.
    /// Looks at scalars, not Characters: a combining mark after a quote or delimiter makes one
    /// Character that the reader still sees as a quote or delimiter.
    public static func escape(_ field: String, delimiter: Character = ",") -> String {
        let delimiterScalars = delimiter.unicodeScalars
        guard field.unicodeScalars.contains(where: { $0 == "\"" || $0 == "\n" || $0 == "\r" || delimiterScalars.contains($0) })
        else { return field }
        var out = "\""
        for scalar in field.unicodeScalars {
            if scalar == "\"" { out.unicodeScalars.append("\"") }
            out.unicodeScalars.append(scalar)
        }
        out.unicodeScalars.append("\"")
        return out
    }

    /// One line of a CSV file, ending with CRLF.
    public static func line(_ fields: [String], delimiter: Character = ",") -> String {
        fields.map { escape($0, delimiter: delimiter) }.joined(separator: String(delimiter)) + "\r\n"
    }
}
