import AgentAPI
import AgentCore
import Cgroups
import Foundation
import Testing

@testable import Faults

/// disk-fill never removes what it did not create, refuses paths the kernel would read differently, and refuses
/// memory-backed file systems unless allowed (then bounded by the memory reserve).
@Suite(.serialized) struct DiskFillSafetyTests {
    func tempDir(_ base: String = FileManager.default.temporaryDirectory.path) throws -> String {
        let dir = base + "/fill-safety-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    func plan(file: String, path: String) throws -> JSONValue {
        try JSONValue.from(DiskFillDriver.Plan(path: path, file: file, bytes: 1 << 20, freeBefore: 0, device: 0))
    }

    @Test func pathsWithNulOrControlBytesAreRefusedWith400BeforeAnything() throws {
        let dir = try tempDir()
        let d = DiskFillDriver(reserve: 1 << 20, registryDir: nil)
        for raw in [dir + "\u{0}x", dir + "\u{0}", dir + "/\u{1}", dir + "\n", dir + "\u{7F}", dir + "\u{85}"] {
            let got = status { _ = try d.prepare(spec: spec(["path": .string(raw), "size": "1MiB"]), context: FaultContext(owner: "t")) }
            #expect(got?.0 == 400, "\(raw.debugDescription)")
            #expect(got?.1 == "spec.path", "\(raw.debugDescription)")
        }
        // The io kind reads the same field the same way.
        let (fs, _) = try serviceTree()
        let subtree = AgentSubtree.locate(ownCgroup: "/", delegated: false, stateDir: "/run/x")
        let io = StressDriver(kind: "io", fs: fs, controllers: ["cpu", "memory", "io", "pids"], subtree: subtree, reserve: 0)
        let got = status {
            _ = try io.prepare(spec: spec(["path": .string(dir + "\u{0}x"), "writeRate": "1MB/s"]), context: FaultContext(owner: "t"))
        }
        #expect(got?.0 == 400)
        #expect(got?.1 == "spec.path")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
    }

    @Test func revertRemovesOnlyItsOwnRegularFileAndTreatsTheRestAsReverted() async throws {
        let dir = try tempDir()
        let d = DiskFillDriver(reserve: 1 << 20, registryDir: nil)
        // The plan the old code journaled for `path: "<dir>\0x"`: the kernel sees `<dir>`, a directory.
        try await d.revert(plan: plan(file: dir + "\u{0}x/.chaos-agent-fill-1234", path: dir + "\u{0}x"))
        #expect(FileManager.default.fileExists(atPath: dir))
        // A plan naming a directory, or any path without our prefix: never touched, and reverted (nothing of ours).
        let sub = dir + "/.chaos-agent-fill-dir"
        try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: true)
        try await d.revert(plan: plan(file: sub, path: dir))
        #expect(FileManager.default.fileExists(atPath: sub))
        let stranger = dir + "/precious"
        _ = FileManager.default.createFile(atPath: stranger, contents: Data("x".utf8))
        try await d.revert(plan: plan(file: stranger, path: dir))
        #expect(FileManager.default.fileExists(atPath: stranger))
        try await d.revert(plan: plan(file: dir, path: dir))
        #expect(FileManager.default.fileExists(atPath: dir))
        // Never created, or already gone: reverted.
        try await d.revert(plan: plan(file: dir + "/.chaos-agent-fill-gone", path: dir))
        try await d.revert(plan: plan(file: dir + "/nodir/.chaos-agent-fill-gone", path: dir + "/nodir"))
        // A symlink with our name is not a file we created: left alone, its target too.
        let link = dir + "/.chaos-agent-fill-link"
        #expect(symlink(stranger, link) == 0)
        try await d.revert(plan: plan(file: link, path: dir))
        #expect(FileManager.default.fileExists(atPath: stranger))
        // Our own regular file goes.
        let own = dir + "/.chaos-agent-fill-own"
        _ = FileManager.default.createFile(atPath: own, contents: Data("x".utf8))
        try await d.revert(plan: plan(file: own, path: dir))
        #expect(!FileManager.default.fileExists(atPath: own))
    }

    @Test func memoryBackedFileSystemsAreRefusedWith422UnlessAllowed() throws {
        guard let shm = try? DiskFillDriver.space("/dev/shm"), DiskFillDriver.memoryBackedTypes[shm.fsType] != nil else { return }
        let dir = try tempDir("/dev/shm")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ctx = FaultContext(owner: "t")
        let refused = DiskFillDriver(reserve: 1 << 20, registryDir: nil)
        do {
            _ = try refused.prepare(spec: spec(["path": .string(dir), "size": "1MiB"]), context: ctx)
            Issue.record("a fill on tmpfs was accepted")
        } catch let e as AgentError {
            #expect(e.status == 422)
            #expect(e.field == "spec.path")
            #expect(e.message.contains("tmpfs") && e.message.contains("f_type 0x1021994"))
            #expect(e.message.contains("allow-memory-backed"))
        }
        // Allowed: bounded by the memory reserve (max of 10% of MemTotal and 256MiB stays available).
        let meminfo = try tempDir() + "/meminfo"
        try "MemTotal:        4194304 kB\nMemFree:  100 kB\nMemAvailable:    1048576 kB\n".write(
            toFile: meminfo, atomically: true, encoding: .utf8)
        let allowed = DiskFillDriver(reserve: 1 << 20, registryDir: nil, allowMemoryBacked: true, memInfoPath: meminfo)
        #expect(DiskFillDriver.memoryReserve(total: 4 << 30) == UInt64(Double(4 << 30) / 10))
        #expect(DiskFillDriver.memoryReserve(total: 1 << 30) == 256 << 20)
        _ = try allowed.prepare(spec: spec(["path": .string(dir), "size": "600MiB"]), context: ctx)
        let got = status { _ = try allowed.prepare(spec: spec(["path": .string(dir), "size": "700MiB"]), context: ctx) }
        #expect(got?.0 == 422)
        #expect(got?.1 == "spec.size")
        // An ordinary disk is not affected.
        _ = try refused.prepare(spec: spec(["path": .string(try tempDir()), "size": "1MiB"]), context: ctx)
    }

    @Test func configKnowsAllowMemoryBacked() throws {
        #expect(try AgentConfig.parse("").diskFillAllowMemoryBacked == false)
        #expect(try AgentConfig.parse("[disk-fill]\nallow-memory-backed = true\n").diskFillAllowMemoryBacked == true)
        #expect(throws: ConfigError.self) { try AgentConfig.parse("[disk-fill]\nallow-memory-backed = \"yes\"\n") }
        #expect(throws: ConfigError.self) { try AgentConfig.parse("[disk-fill]\nallow-ram = true\n") }
    }
}
