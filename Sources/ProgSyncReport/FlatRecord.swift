import ProgSyncCore

/// A record as files hold it: the id plus its fields, flat (`{"id": …, "kind": …, …}`).
public struct FlatRecord: Sendable, Equatable {
    public var id: String
    /// Every field except `id`.
    public var fields: [String: JSONValue]
    /// Field → the version (`origin/seq`) each value was exported from; nil when not known
    /// (a hand-made file). The import writes only what differs from it (see `ImportPlan`).
    public var basis: [String: String]?

    public init(id: String, fields: [String: JSONValue], basis: [String: String]? = nil) {
        self.id = id
        self.fields = fields
        self.basis = basis
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
            let basis = object["basis"]?.objectValue?.compactMapValues(\.stringValue)
            self.init(id: id, fields: fields, basis: basis)
        } else {
            var fields = object
            fields["id"] = nil
            self.init(id: id, fields: fields)
        }
    }

    /// The flat JSON object with `id`, and `basis` when known (the import body's record).
    public var flatJSON: JSONValue {
        var object = fields
        object["id"] = .string(id)
        if let basis { object["basis"] = .object(basis.mapValues(JSONValue.string)) }
        return .object(object)
    }
}
