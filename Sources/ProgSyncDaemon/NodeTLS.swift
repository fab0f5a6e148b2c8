import Crypto
import Foundation
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import ProgSyncHTTPClient
import SwiftASN1
import X509

#if canImport(Glibc)
import Glibc
private let systemWrite = Glibc.write
#elseif canImport(Darwin)
import Darwin
private let systemWrite = Darwin.write
#endif

// Peer transport security (DESIGN §8, §13): mutual TLS between partner nodes. Every node has a
// self-signed certificate; partners pin its public key (the SPKI SHA-256, curl's
// CURLOPT_PINNEDPUBLICKEY format) in the partner registry, which is the only trust root. No CA,
// no host names, no validity dates are relied on: a connection is trusted exactly when the key
// presented is one the registry lists.

/// A failure to create, read, write or parse a node's TLS identity.
public struct NodeTLSError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = "TLS identity: " + description }
}

/// A node's TLS identity: a self-signed certificate and its private key, identified by its pin.
public struct NodeTLSIdentity: Sendable {
    public let certificatePEM: String
    public let privateKeyPEM: String
    /// "sha256//" + base64(SHA-256 of the certificate's SubjectPublicKeyInfo DER): curl's CURLOPT_PINNEDPUBLICKEY format, also what the registry stores as certificatePin.
    public let pin: String

    private init(certificatePEM: String, privateKeyPEM: String, pin: String) {
        self.certificatePEM = certificatePEM
        self.privateKeyPEM = privateKeyPEM
        self.pin = pin
    }

    /// Creates a fresh P-256 key and a self-signed certificate for it.
    ///
    /// P-256 ECDSA because both TLS stacks accept it for TLS 1.3 signatures out of the box:
    /// BoringSSL (NIOSSL, the server) leaves Ed25519 out of its default verify preferences, so an
    /// Ed25519 client certificate would be refused by the listener.
    public static func create(
        commonName: String, validFor: Duration = .seconds(10 * 365 * 24 * 3600)
    ) throws -> NodeTLSIdentity {
        let seconds = validFor.components.seconds
        guard seconds > 0 else { throw NodeTLSError("validity must be positive") }
        let key = P256.Signing.PrivateKey()
        let privateKey = Certificate.PrivateKey(key)
        let name = try DistinguishedName { CommonName(commonName) }
        // Backdated a day: validity is not checked by progsync (the pin is the trust), but other
        // tools looking at the certificate should not see it as "not yet valid" on a skewed clock.
        let now = Date()
        let certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: privateKey.publicKey,
            notValidBefore: now.addingTimeInterval(-24 * 3600),
            notValidAfter: now.addingTimeInterval(TimeInterval(seconds)),
            issuer: name,
            subject: name,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
                SubjectAlternativeNames([.dnsName(commonName)])
            },
            issuerPrivateKey: privateKey
        )
        let certificatePEM = try certificate.serializeAsPEM().pemString + "\n"
        let privateKeyPEM = key.pemRepresentation + "\n"
        return NodeTLSIdentity(
            certificatePEM: certificatePEM, privateKeyPEM: privateKeyPEM,
            pin: try pin(ofCertificatePEM: certificatePEM))
    }

    /// Reads a certificate and its private key (PEM) and checks that they belong together.
    public static func load(certificatePath: String, keyPath: String) throws -> NodeTLSIdentity {
        let certificatePEM = try readText(certificatePath, what: "certificate")
        let privateKeyPEM = try readText(keyPath, what: "private key")
        let certificate: Certificate
        do {
            certificate = try Certificate(pemEncoded: certificatePEM)
        } catch {
            throw NodeTLSError("\(certificatePath) is not a PEM certificate: \(error)")
        }
        let privateKey: Certificate.PrivateKey
        do {
            privateKey = try Certificate.PrivateKey(pemEncoded: privateKeyPEM)
        } catch {
            throw NodeTLSError("\(keyPath) is not a PEM private key")  // never echo key material
        }
        guard privateKey.publicKey == certificate.publicKey else {
            throw NodeTLSError("\(keyPath) is not the private key of \(certificatePath)")
        }
        return NodeTLSIdentity(
            certificatePEM: certificatePEM, privateKeyPEM: privateKeyPEM,
            pin: try pin(ofCertificatePEM: certificatePEM))
    }

    /// Writes the certificate (mode 0644) and the key (mode 0600). Both are created exclusively:
    /// an existing file is never overwritten, since a node's key is its name to partners.
    public func write(certificatePath: String, keyPath: String) throws {
        for path in [certificatePath, keyPath] where FileManager.default.fileExists(atPath: path) {
            throw NodeTLSError("\(path) already exists; a node keeps its TLS identity")
        }
        try Self.createExclusively(keyPath, contents: privateKeyPEM, mode: 0o600)
        do {
            try Self.createExclusively(certificatePath, contents: certificatePEM, mode: 0o644)
        } catch {
            unlink(keyPath)  // do not leave half an identity behind
            throw error
        }
    }

    /// The pin of the first certificate in a PEM text: SHA-256 over the SubjectPublicKeyInfo
    /// exactly as encoded in the certificate, base64, prefixed "sha256//".
    public static func pin(ofCertificatePEM pem: String) throws -> String {
        let documents: [PEMDocument]
        do {
            documents = try PEMDocument.parseMultiple(pemString: pem)
        } catch {
            throw NodeTLSError("not a PEM certificate: \(error)")
        }
        guard let document = documents.first(where: { $0.discriminator == "CERTIFICATE" }) else {
            throw NodeTLSError("no CERTIFICATE block in the PEM text")
        }
        return try pin(ofSubjectPublicKeyInfoDER: subjectPublicKeyInfo(ofCertificateDER: document.derBytes))
    }

    /// The pin of a DER-encoded SubjectPublicKeyInfo.
    public static func pin(ofSubjectPublicKeyInfoDER spki: some Sequence<UInt8>) -> String {
        "sha256//" + Data(SHA256.hash(data: Array(spki))).base64EncodedString()
    }

    /// The pin of a certificate presented in a TLS handshake, computed the way curl does it
    /// (OpenSSL's SPKI encoding of the certificate's public key).
    public static func pin(of certificate: NIOSSLCertificate) throws -> String {
        pin(ofSubjectPublicKeyInfoDER: try certificate.extractPublicKey().toSPKIBytes())
    }

    /// The SubjectPublicKeyInfo element of a certificate, as the bytes it was encoded with.
    static func subjectPublicKeyInfo(ofCertificateDER der: [UInt8]) throws -> ArraySlice<UInt8> {
        func children(_ node: ASN1Node) throws -> [ASN1Node] {
            guard case .constructed(let nodes) = node.content else {
                throw NodeTLSError("malformed certificate")
            }
            return Array(nodes)
        }
        do {
            // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
            // TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer,
            //                               validity, subject, subjectPublicKeyInfo, ... }
            let certificate = try DER.parse(der)
            guard let tbs = try children(certificate).first else { throw NodeTLSError("malformed certificate") }
            var fields = try children(tbs)
            if let first = fields.first, first.identifier.tagClass == .contextSpecific {
                fields.removeFirst()
            }
            guard fields.count > 5, fields[5].identifier == .sequence else {
                throw NodeTLSError("malformed certificate")
            }
            return fields[5].encodedBytes
        } catch let error as NodeTLSError {
            throw error
        } catch {
            throw NodeTLSError("malformed certificate: \(error)")
        }
    }

    private static func readText(_ path: String, what: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw NodeTLSError("cannot read the \(what) at \(path)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw NodeTLSError("\(path) is not a PEM \(what)")
        }
        return text
    }

    private static func createExclusively(_ path: String, contents: String, mode: mode_t) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else {
            throw NodeTLSError("cannot create \(path): \(String(cString: strerror(errno)))")
        }
        let bytes = Array(contents.utf8)
        var written = 0
        var failed = false
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { systemWrite(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                failed = true
                break
            }
            written += n
        }
        if failed || fsync(fd) != 0 {
            let reason = String(cString: strerror(errno))
            close(fd)
            unlink(path)
            throw NodeTLSError("cannot write \(path): \(reason)")
        }
        close(fd)
    }
}

/// Server-side TLS for the peer listener: presents the node's certificate, REQUIRES a client certificate, and accepts only client certificates whose SPKI pin is in `allowedPins()` (called per handshake, so a reloaded registry applies). Refusals are logged at warning level with the presented pin (never key material), e.g. "peer TLS refused: client certificate not in the partner registry" pin=sha256//…; a missing client certificate is refused during the handshake too.
///
/// TLS 1.3 only. The custom verification callback replaces chain verification entirely (no CA
/// store is loaded, dates and names are not checked): the pin is the whole decision.
///
/// `acceptStrangers()`: an invite is open, so an unknown certificate completes the handshake;
/// `PeerMembershipMiddleware` then lets it reach the join route only.
public func peerServerTLSConfiguration(
    identity: NodeTLSIdentity, allowedPins: @escaping @Sendable () -> Set<String>,
    acceptStrangers: @escaping @Sendable () -> Bool = { false }, logger: Logger
) throws -> TLSChannelConfiguration {
    let certificate = try NIOSSLCertificate(bytes: Array(identity.certificatePEM.utf8), format: .pem)
    let privateKey = try NIOSSLPrivateKey(bytes: Array(identity.privateKeyPEM.utf8), format: .pem)
    var tls = TLSConfiguration.makeServerConfiguration(
        certificateChain: [.certificate(certificate)], privateKey: .privateKey(privateKey))
    tls.minimumTLSVersion = .tlsv13
    // Requires a client certificate (SSL_VERIFY_FAIL_IF_NO_PEER_CERT); the callback below then
    // makes the only decision. No trust roots: nothing is trusted by chain.
    tls.certificateVerification = .noHostnameVerification
    tls.trustRoots = .certificates([])
    tls.sendCANameList = false
    return TLSChannelConfiguration(tlsConfiguration: tls) { certificates, promise in
        promise.succeed(verifyPeerCertificate(certificates, allowedPins: allowedPins(), acceptStrangers: acceptStrangers, logger: logger))
    }
}

/// The decision of the peer listener's verification callback, on the chain the client presented.
func verifyPeerCertificate(
    _ certificates: [NIOSSLCertificate], allowedPins: Set<String>, acceptStrangers: () -> Bool = { false }, logger: Logger
) -> NIOSSLVerificationResult {
    guard let leaf = certificates.first else {
        logger.warning("peer TLS refused: no client certificate")
        return .failed
    }
    let pin: String
    do {
        pin = try NodeTLSIdentity.pin(of: leaf)
    } catch {
        logger.warning("peer TLS refused: unreadable client certificate", metadata: ["error": "\(error)"])
        return .failed
    }
    guard allowedPins.contains(pin) else {
        if acceptStrangers() {
            logger.info("peer TLS: an unknown certificate may present an invite (join route only)", metadata: ["pin": "\(pin)"])
            return .certificateVerified
        }
        logger.warning(
            "peer TLS refused: client certificate not in the partner registry", metadata: ["pin": "\(pin)"])
        return .failed
    }
    return .certificateVerified
}

/// Client-side settings for libcurl: our cert+key files, the peer's pin, verifyPeer false and verifyHost false (trust comes only from the pin).
public func peerClientTLS(certificatePath: String, keyPath: String, peerPin: String) -> HTTPClientConfiguration.TLS {
    HTTPClientConfiguration.TLS(
        clientCertificatePath: certificatePath,
        clientKeyPath: keyPath,
        pinnedPublicKey: peerPin,
        verifyPeer: false,
        verifyHost: false
    )
}
