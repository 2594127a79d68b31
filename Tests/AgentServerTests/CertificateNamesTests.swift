import Foundation
import NIOSSL
import Testing

@testable import AgentServer

/// The identity a client certificate maps to a role with: read from the DER, so no other subject field can pose as
/// the CN. The certificate is made here with openssl (as scripts/gen-certs does).
@Suite("certificate identities", .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl"), "needs openssl"))
struct CertificateNamesTests {
    @Test("CN first, then DNS/URI/e-mail SANs; an OU that imitates a CN is not an identity")
    func names() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("certnames-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        p.arguments = [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
            "-keyout", dir.appendingPathComponent("k.pem").path, "-out", dir.appendingPathComponent("c.pem").path,
            "-subj", "/OU=x;common_name=admin>/CN=orchestrator",
            "-addext", "subjectAltName=DNS:ci.example.org,URI:spiffe://fleet/ci,email:ops@example.org,IP:10.0.0.1",
        ]
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        try #require(p.terminationStatus == 0)
        let cert = try NIOSSLCertificate(file: dir.appendingPathComponent("c.pem").path, format: .pem)
        #expect(CertificateRoles.names(of: cert) == ["orchestrator", "ci.example.org", "spiffe://fleet/ci", "ops@example.org"])
    }
}
