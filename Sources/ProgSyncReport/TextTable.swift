/// A plain-text table for terminals: columns padded by display width (emoji and CJK count as
/// two cells), optional truncation of one column so a line fits a width.
public struct TextTable: Sendable {
    public var headers: [String]
    public var rows: [[String]]
    /// Spaces between columns.
    public var gap = 2

    public init(headers: [String], rows: [[String]] = []) {
        self.headers = headers
        self.rows = rows
    }

    public mutating func append(_ row: [String]) { rows.append(row) }

    /// Renders the table. When `maxWidth` is given, column `shrink` (default: the last) is cut
    /// with `…` so each line fits, but never below `minShrinkWidth` cells. The last column is
    /// not padded, so lines carry no trailing spaces.
    public func render(maxWidth: Int? = nil, shrink: Int? = nil, minShrinkWidth: Int = 10) -> String {
        let columnCount = max(headers.count, rows.map(\.count).max() ?? 0)
        guard columnCount > 0 else { return "" }
        func cell(_ row: [String], _ i: Int) -> String {
            i < row.count ? TextTable.singleLine(row[i]) : ""
        }
        let all = [headers] + rows
        var widths = (0..<columnCount).map { i in all.map { TextTable.displayWidth(cell($0, i)) }.max() ?? 0 }
        let shrinkColumn = shrink ?? columnCount - 1
        if let maxWidth, shrinkColumn < columnCount {
            let others = widths.enumerated().filter { $0.offset != shrinkColumn }.map(\.element).reduce(0, +)
            let available = maxWidth - others - gap * (columnCount - 1)
            widths[shrinkColumn] = min(widths[shrinkColumn], max(minShrinkWidth, available))
        }
        var lines: [String] = []
        for row in all {
            var parts: [String] = []
            for i in 0..<columnCount {
                var text = cell(row, i)
                if i == shrinkColumn { text = TextTable.truncate(text, to: widths[i]) }
                parts.append(i == columnCount - 1 ? text : TextTable.pad(text, to: widths[i]))
            }
            var line = parts.joined(separator: String(repeating: " ", count: gap))
            while line.last == " " { line.removeLast() }
            lines.append(line)
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Newlines and tabs become spaces so one cell stays on one line.
    public static func singleLine(_ text: String) -> String {
        guard text.contains(where: { $0.isNewline || $0 == "\t" }) else { return text }
        return String(text.map { $0.isNewline || $0 == "\t" ? " " : $0 })
    }

    /// Pads with spaces on the right to `width` display cells.
    public static func pad(_ text: String, to width: Int) -> String {
        let w = displayWidth(text)
        return w >= width ? text : text + String(repeating: " ", count: width - w)
    }

    /// Cuts `text` to at most `width` display cells, ending with `…` when cut.
    public static func truncate(_ text: String, to width: Int) -> String {
        guard displayWidth(text) > width else { return text }
        guard width > 0 else { return "" }
        var out = ""
        var used = 0
        for character in text {
            let w = displayWidth(character)
            if used + w > width - 1 { break }
            out.append(character)
            used += w
        }
        while out.last == " " { out.removeLast() }
        return out + "…"
    }

    /// Terminal cells taken by `text`.
    public static func displayWidth(_ text: String) -> Int {
        text.reduce(0) { $0 + displayWidth($1) }
    }

    /// Terminal cells taken by one character: 2 for emoji presentation and East Asian wide
    /// characters, 0 for controls, 1 otherwise.
    public static func displayWidth(_ character: Character) -> Int {
        let scalars = character.unicodeScalars
        guard let first = scalars.first else { return 0 }
        if first.value < 0x20 || (0x7F..<0xA0).contains(first.value) { return 0 }
        if scalars.contains(where: { $0.value == 0xFE0F }) { return 2 }  // emoji presentation selector
        if first.properties.isEmojiPresentation { return 2 }
        if isWide(first.value) { return 2 }
        return 1
    }

    private static func isWide(_ v: UInt32) -> Bool {
        (0x1100...0x115F).contains(v) || (0x2E80...0x303E).contains(v) || (0x3041...0x33FF).contains(v)
            || (0x3400...0x4DBF).contains(v) || (0x4E00...0x9FFF).contains(v) || (0xA000...0xA4CF).contains(v)
            || (0xAC00...0xD7A3).contains(v) || (0xF900...0xFAFF).contains(v) || (0xFE30...0xFE4F).contains(v)
            || (0xFF00...0xFF60).contains(v) || (0xFFE0...0xFFE6).contains(v) || (0x20000...0x3FFFD).contains(v)
    }
}
