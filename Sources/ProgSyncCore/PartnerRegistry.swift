import Crypto

/// The partner registry: organisations, their nodes and keys, and the coordinating orgs. It is the
/// only trust root: a commit is applied only if its origin is listed here with the key that signed it.
public struct PartnerRegistry: Sendable {
    /// Unchecked: swift-crypto's public key is an immutable value but not marked Sendable on Linux.
    public struct Node: @unchecked Sendable {
        public var id: NodeID
        public var org: String
        public var name: String?
        public var publicKey: Curve25519.Signing.PublicKey
        public var certificatePin: String?
        public var address: String?
        /// The node's last seq that stays valid, once a coordinator retired it: its later commits
        /// are withheld everywhere, its TLS pin is refused, and no one dials it.
        public var retiredAfter: UInt64?
        /// Admitted by a membership record rather than by the bootstrap registry.
        public var admittedByRecord = false
        public var isRetired: Bool { retiredAfter != nil }

        public init(org: String, publicKey: Curve25519.Signing.PublicKey, name: String? = nil,
                    certificatePin: String? = nil, address: String? = nil) {
            self.id = NodeID(publicKey: publicKey)
            self.org = org
            self.name = name
            self.publicKey = publicKey
            self.certificatePin = certificatePin
            self.address = address
        }
    }

    public private(set) var nodes: [NodeID: Node]
    public private(set) var orgNames: [String: String]
    public private(set) var coordinators: Set<String>

    public init(nodes: [Node] = [], coordinators: Set<String> = [], orgNames: [String: String] = [:]) {
        self.nodes = Dictionary(nodes.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        self.coordinators = coordinators
        self.orgNames = orgNames
    }

    public mutating func add(_ node: Node) { nodes[node.id] = node }
    public mutating func setOrgName(_ code: String, _ name: String) { orgNames[code] = name }
    /// Retires a node after `seq`; an earlier retirement stands.
    public mutating func retire(_ id: NodeID, after seq: UInt64) {
        guard var node = nodes[id] else { return }
        node.retiredAfter = min(node.retiredAfter ?? seq, seq)
        nodes[id] = node
    }

    /// The nodes not retired: whose certificates the listener accepts and which replicators dial.
    public var activeNodes: [Node] { nodes.values.filter { !$0.isRetired }.sorted { $0.id < $1.id } }

    public func node(_ id: NodeID) -> Node? { nodes[id] }
    public func org(of id: NodeID) -> String? { nodes[id]?.org }
    public func isCoordinator(org: String) -> Bool { coordinators.contains(org) }

    /// Reads the registry file's JSON:
    /// `{"coordinators": ["jenv"], "orgs": [{"code": "jenv", "name": "…", "nodes":
    ///   [{"id": "…", "name": "…", "publicKey": "<base64>", "certificatePin": "sha256//…", "address": "https://…"}]}]}`.
    /// A node whose id does not match its key is refused, so a typo cannot grant trust.
    public init(json: JSONValue) throws(RegistryError) {
        guard let orgs = json["orgs"]?.arrayValue else { throw RegistryError("registry: missing \"orgs\" list") }
        var nodes: [Node] = []
        var names: [String: String] = [:]
        for org in orgs {
            guard let code = org["code"]?.stringValue, ProgrammeSchema.isValidOrgCode(code) else {
                throw RegistryError("registry: an org has no valid \"code\"")
            }
            names[code] = org["name"]?.stringValue ?? code
            for n in org["nodes"]?.arrayValue ?? [] {
                guard let keyText = n["publicKey"]?.stringValue, let keyBytes = Base64.decode(keyText),
                    let key = try? Curve25519.Signing.PublicKey(rawRepresentation: keyBytes)
                else { throw RegistryError("registry: a node of \(code) has no valid \"publicKey\"") }
                let node = Node(org: code, publicKey: key, name: n["name"]?.stringValue,
                                certificatePin: n["certificatePin"]?.stringValue, address: n["address"]?.stringValue)
                if let id = n["id"]?.stringValue, id != node.id.rawValue {
                    throw RegistryError("registry: node \(id) of \(code) does not match its public key (expected \(node.id))")
                }
                nodes.append(node)
            }
        }
        let coordinators = Set((json["coordinators"]?.arrayValue ?? []).compactMap(\.stringValue))
        self.init(nodes: nodes, coordinators: coordinators, orgNames: names)
    }

    public var json: JSONValue {
        let codes = Set(orgNames.keys).union(nodes.values.map(\.org)).sorted()
        let orgs: [JSONValue] = codes.map { code in
            let orgNodes = nodes.values.filter { $0.org == code }.sorted { $0.id < $1.id }.map { n -> JSONValue in
                var o: [String: JSONValue] = ["id": .string(n.id.rawValue), "publicKey": .string(Base64.encode(Array(n.publicKey.rawRepresentation)))]
                if let v = n.name { o["name"] = .string(v) }
                if let v = n.certificatePin { o["certificatePin"] = .string(v) }
                if let v = n.address { o["address"] = .string(v) }
                return .object(o)
            }
            return .object(["code": .string(code), "name": .string(orgNames[code] ?? code), "nodes": .array(orgNodes)])
        }
        return .object(["coordinators": .array(coordinators.sorted().map { .string($0) }), "orgs": .array(orgs)])
    }
}

public struct RegistryError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
