/// Settings shared by every request an ``HTTPClient`` sends.
public struct HTTPClientConfiguration: Sendable {
    /// Connect through this Unix domain socket (`CURLOPT_UNIX_SOCKET_PATH`)
    /// instead of TCP. Request URLs then name a placeholder host, e.g.
    /// `http://localhost/v1/status`.
    public var unixSocketPath: String?

    /// Time allowed for establishing the connection (`CURLOPT_CONNECTTIMEOUT_MS`).
    public var connectTimeout: Duration

    /// Time allowed for a whole request (`CURLOPT_TIMEOUT_MS`), unless the
    /// request sets its own ``HTTPClientRequest/timeout``. Time a request
    /// spends queued behind other requests of the same client is not counted.
    public var requestTimeout: Duration

    /// Largest response body accepted. A larger body aborts the transfer from
    /// the write callback and the send fails with
    /// ``HTTPClientError/Code-swift.struct/responseTooLarge``.
    public var maxResponseBytes: Int

    /// Client-side TLS settings; `nil` leaves libcurl's defaults (verify the
    /// peer against the system CA store, verify the host name).
    public var tls: TLS?

    /// A kept-alive connection idle for longer is closed rather than reused
    /// (`CURLOPT_MAXAGE_CONN`, whole seconds). Shorter than a server's idle
    /// timeout, so this side closes first and never sends into a connection
    /// the server is closing.
    public var maxIdleConnectionAge: Duration

    public struct TLS: Sendable {
        /// PEM bundle of CA certificates to trust (`CURLOPT_CAINFO`).
        public var caCertificatePath: String?
        /// PEM client certificate (`CURLOPT_SSLCERT`).
        public var clientCertificatePath: String?
        /// PEM private key of the client certificate (`CURLOPT_SSLKEY`).
        public var clientKeyPath: String?
        /// Public key pin, `"sha256//BASE64"` (`CURLOPT_PINNEDPUBLICKEY`).
        public var pinnedPublicKey: String?
        /// Verify the peer's certificate chain (`CURLOPT_SSL_VERIFYPEER`).
        /// A self-signed peer pinned by key uses `false` plus ``pinnedPublicKey``.
        public var verifyPeer: Bool
        /// Verify that the certificate matches the host name (`CURLOPT_SSL_VERIFYHOST`).
        public var verifyHost: Bool

        public init(
            caCertificatePath: String? = nil,
            clientCertificatePath: String? = nil,
            clientKeyPath: String? = nil,
            pinnedPublicKey: String? = nil,
            verifyPeer: Bool = true,
            verifyHost: Bool = true
        ) {
            self.caCertificatePath = caCertificatePath
            self.clientCertificatePath = clientCertificatePath
            self.clientKeyPath = clientKeyPath
            self.pinnedPublicKey = pinnedPublicKey
            self.verifyPeer = verifyPeer
            self.verifyHost = verifyHost
        }
    }

    /// 64 MiB.
    public static let defaultMaxResponseBytes = 64 * 1024 * 1024

    public init(
        unixSocketPath: String? = nil,
        connectTimeout: Duration = .seconds(5),
        requestTimeout: Duration = .seconds(30),
        maxResponseBytes: Int = HTTPClientConfiguration.defaultMaxResponseBytes,
        tls: TLS? = nil,
        maxIdleConnectionAge: Duration = .seconds(20)
    ) {
        self.maxIdleConnectionAge = maxIdleConnectionAge
        self.unixSocketPath = unixSocketPath
        self.connectTimeout = connectTimeout
        self.requestTimeout = requestTimeout
        self.maxResponseBytes = maxResponseBytes
        self.tls = tls
    }
}
