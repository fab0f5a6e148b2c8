/// What `--version` prints: the release from `VERSION` and the git commit the binary was built
/// from, stamped by the BuildStamp plugin (a separate module, so a new commit recompiles only this).
public enum BuildInfo {
    public static let version = stampedVersion
    public static let commit = stampedCommit

    /// `progsyncd 0.14.0 (commit 1a2b3c4d5e6f)`.
    public static func versionLine(_ program: String) -> String {
        "\(program) \(version) (commit \(commit))"
    }
}
