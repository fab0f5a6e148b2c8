import ProgSyncCore

/// What importing a bundle did.
public struct BundleImport: Sendable {
    public var exporter: NodeID
    public var header: JSONValue
    public var commits: Int
    public var report: ApplyReport
    /// Whether the exporter's registered key sealed the file, so its version vector was recorded
    /// as what that node holds. When false, `headerNote` says why.
    public var headerVerified: Bool
    public var headerNote: String?
}

extension Replica {
    /// Verifies a bundle file whole, then applies its commits through the same path as the
    /// network (each commit checked against its origin's key). The header's version vector is
    /// recorded only when the exporter's registered key sealed the file: a forged or unsigned
    /// header would otherwise make `bundle export --peer` leave out commits the node lacks.
    ///
    /// Throws `BundleError` for a file that must be refused whole: damaged, too large, a
    /// malformed or out-of-range commit, or a seal that does not match the registered key of the
    /// node it names.
    public func importBundle(_ file: [UInt8], limits: CommitBundle.Limits = .init()) throws -> BundleImport {
        let bundle = try CommitBundle(decoding: file, limits: limits)
        guard let exporter = bundle.exporter else { throw BundleError("bundle header names no exporting node") }
        var commits: [SignedCommit] = []
        commits.reserveCapacity(bundle.commits.count)
        for (i, c) in bundle.commits.enumerated() {
            let commit: SignedCommit
            do { commit = try SignedCommit(canonicalBytes: c.body, signature: c.signature) } catch {
                throw BundleError("commit \(i + 1) of the bundle is malformed: \(error.description)")
            }
            // A file holds nothing out of range (a seq of 0 or 2^63, say): refused whole, as a cut file is.
            if let verdict = CommitRules.validateEnvelope(commit.commit) {
                throw BundleError("commit \(i + 1) of the bundle is invalid: \(verdict.detail)")
            }
            commits.append(commit)
        }
        var note: String?
        if let node = registry.node(exporter) {
            if bundle.seal == nil {
                note = "the bundle was written by an older progsync that did not sign bundles"
            } else if !bundle.isSealed(by: node.publicKey) {
                throw BundleError("bundle seal is not signed by the registered key of node \(exporter): the file was forged or altered")
            }
        } else {
            note = "the exporting node \(exporter) is not in the registry"
        }
        let report = try apply(commits)
        if note == nil, exporter != nodeID {
            try setKnownVector(of: exporter, bundle.versionVector, merging: true)
        }
        return BundleImport(exporter: exporter, header: bundle.header, commits: commits.count, report: report,
                            headerVerified: note == nil, headerNote: note)
    }
}
