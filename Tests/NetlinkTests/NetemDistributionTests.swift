import Foundation
import Testing

@testable import Netlink

@Suite("Netem distribution tables")
struct NetemDistributionTests {
    static func stats(_ t: [Int16]) -> (mean: Double, sd: Double) {
        let v = t.map { Double($0) / 8192 }
        let mean = v.reduce(0, +) / Double(v.count)
        return (mean, (v.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(v.count)).squareRoot())
    }

    @Test("normal: 4096 sorted entries, mean 0, sd 1, symmetric, known quantiles")
    func normal() {
        let t = NetemDistribution.normal
        #expect(t.count == 4096)
        #expect(t == t.sorted())
        let (mean, sd) = Self.stats(t)
        #expect(abs(mean) < 0.001 && abs(sd - 1) < 0.01)
        #expect(zip(t, t.reversed()).allSatisfy { abs(Int($0) + Int($1)) <= 1 })
        // Φ⁻¹(0.5/4096) = -3.6683, Φ⁻¹(1.5/4096) = -3.3772 (×8192, rounded)
        #expect(Array(t.prefix(2)) == [-30051, -27666])
    }

    @Test("pareto: standardised, floor at (1 - 1.5)/√0.75, heavy tail clamped")
    func pareto() {
        let t = NetemDistribution.pareto
        #expect(t.count == 4096 && t == t.sorted())
        #expect(abs(Int(t[0]) - Int(((pow(1 - 0.5 / 4096, -1.0 / 3) - 1.5) / 0.75.squareRoot() * 8192).rounded())) <= 1)
        #expect(t.last == Int16.max)
        #expect(abs(Self.stats(t).mean) < 0.1)
    }

    @Test("paretonormal: sorted, between its two parents' shapes")
    func paretoNormal() {
        let t = NetemDistribution.paretoNormal
        #expect(t.count == 4096 && t == t.sorted())
        let (mean, sd) = Self.stats(t)
        #expect(abs(mean) < 0.05 && sd > 0.7 && sd < 1.05, "mean \(mean) sd \(sd)")
        #expect(t[0] < NetemDistribution.pareto[0] && t[0] > NetemDistribution.normal[0])
    }

    /// iproute2 ships tables made by other programs (and scales pareto by 1/variance); only shapes should agree.
    @Test("shapes correlate with iproute2's .dist files when installed",
          arguments: [("normal", NetemDistribution.normal), ("pareto", NetemDistribution.pareto), ("paretonormal", NetemDistribution.paretoNormal)])
    func shapeMatchesShippedTables(_ name: String, _ ours: [Int16]) throws {
        let path = "/usr/lib/x86_64-linux-gnu/tc/\(name).dist"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return }
        let shipped = text.split(separator: "\n").filter { !$0.hasPrefix("#") }.flatMap { $0.split(separator: " ") }.compactMap { Double($0) }
        #expect(shipped.count == ours.count)
        let a = ours.map(Double.init)
        let ma = a.reduce(0, +) / Double(a.count), mb = shipped.reduce(0, +) / Double(shipped.count)
        let cov = zip(a, shipped).map { ($0 - ma) * ($1 - mb) }.reduce(0, +)
        let va = a.map { ($0 - ma) * ($0 - ma) }.reduce(0, +), vb = shipped.map { ($0 - mb) * ($0 - mb) }.reduce(0, +)
        let correlation = cov / (va * vb).squareRoot()
        #expect(correlation > 0.98, "\(name): correlation \(correlation)")
    }
}
