import ProgSyncCore

/// A record as files hold it: the id plus its fields, flat (`{"id": …, "kind": …, …}`).
public struct FlatRecord: Sendable, Equatable {
    public var id: String
    /// Every field except `id`.
    public var fields: [String: JSONValue]

    public init(id: String, fields: [String: JSONValue]) {
        self.id = id
        self.fields = fields
    }

    public subscript(field: String) -> JSONValue? {
        get { fields[field] }
        set { fields[field] = newValue }
    }

    public var kind: RecordKind? { fields["kind"]?.stringValue.flatMap(RecordKind.init(rawValue:)) }
    public var isDeleted: Bool { fields["deleted"]?.boolValue ?? false }
    public var title: String? { fields["title"]?.stringValue }
    public var number: Int64? { fields["number"]?.intValue }
    public var status: ProgrammeStatus? { fields["status"]?.stringValue.flatMap(ProgrammeStatus.init(rawValue:)) }

    /// A record of the local API: `{"id": …, "fields": {…}, "conflicts": […], "updated": …}`.
    /// A flat object (`{"id": …, "kind": …}`) is accepted too.
    public init?(apiRecord value: JSONValue) {
        guard let object = value.objectValue, let id = object["id"]?.stringValue else { return nil }
        if let fields = object["fields"]?.objectValue {
            self.init(id: id, fields: fields)
        } else {
            var fields = object
            fields["id"] = nil
            self.init(id: id, fields: fields)
        }
    }

    /// The flat JSON object with `id` (used in the import body).
    public var flatJSON: JSONValue {
        var object = fields
        object["id"] = .string(id)
        return .object(object)
    }

    /// Fields in the order files use: the schema's order, then any other field by name.
    public var orderedFieldNames: [String] {
        let known = RecordFile.fieldOrder.filter { fields[$0] != nil }
        let others = fields.keys.filter { !RecordFile.fieldOrder.contains($0) }.sorted(by: RecordFile.byteOrder)
        return known + others
    }
}
