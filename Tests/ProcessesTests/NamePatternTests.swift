import Foundation
import Testing

@testable import Processes

/// Deterministic pseudo-random numbers (SplitMix64), so a failing case is the same on every run.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

private func search(_ pattern: String, _ text: String) throws -> Bool {
    var budget = MatchBudget()
    return try NamePattern(pattern).matches(text, budget: &budget)
}

private func steps(_ pattern: String, _ text: String) throws -> (Bool, Int) {
    var budget = MatchBudget()
    let matched = try NamePattern(pattern).matches(text, budget: &budget)
    return (matched, budget.used)
}

@Suite("name patterns: linear-time matching")
struct NamePatternTests {
    static let table: [(String, String, Bool)] = [
        ("sleep", "sleep", true), ("sleep", "/bin/sleep 600", true), ("^sleep$", "/bin/sleep", false),
        ("^sleep$", "sleep", true), ("sl.ep", "sleep", true), ("sl.ep", "slep", false), ("a|b", "xbx", true),
        ("^(nginx|httpd)$", "httpd", true), ("^(nginx|httpd)$", "httpd2", false), ("^(?:ab)+$", "ababab", true),
        ("^(?:ab)+$", "ababa", false), ("colou?r", "color", true), ("colou?r", "colouur", false),
        ("^a{3}$", "aaa", true), ("^a{3}$", "aa", false), ("^a{2,}$", "aaaaa", true), ("^a{2,}$", "a", false),
        ("^a{1,2}$", "aa", true), ("^a{1,2}$", "aaa", false), ("^a{0}b$", "b", true),
        ("[a-z0-9_-]+", "--", true), ("^[a-z0-9_-]+$", "web_01-a", true), ("^[a-z0-9_-]+$", "Web", false),
        ("^[^0-9]+$", "abc", true), ("^[^0-9]+$", "ab1", false), ("^[]x]$", "]", true), ("^[x-]$", "-", true),
        ("\\d+", "pid 42", true), ("^\\d+$", "4a", false), ("^\\w+$", "a_1", true), ("^\\w+$", "a-1", false),
        ("\\s", "a b", true), ("\\s", "ab", false), ("^\\S+$", "ab", true), ("^\\D$", "a", true), ("^\\W$", "-", true),
        ("\\.", "a.b", true), ("\\.", "ab", false), ("^a\\+b$", "a+b", true), ("\\(x\\)", "f(x)", true),
        ("\\\\", "a\\b", true), ("\\{", "{", true), ("[\\d]", "7", true), ("[\\]]", "]", true),
        ("^[[:digit:]]+$", "123", true), ("^[[:alpha:]_]+$", "ab_c", true), ("^[[:space:]]$", " ", true),
        ("^$", "", true), ("^$", "a", false), ("", "anything", true), ("a$", "ba", true), ("a$", "ab", false),
        ("(a|)b", "b", true), ("x*", "", true), ("^(a*)*$", "aaaa", true), ("^(a*)*$", "aab", false),
        ("^x(a+)+$", "x" + String(repeating: "a", count: 20) + "b", false),
        ("^x(a+)+$", "x" + String(repeating: "a", count: 20), true), ("é+", "café", true), ("^.$", "é", true),
        ("a.c", "a\nc", false),
    ]

    @Test func table() throws {
        for (pattern, text, expected) in Self.table {
            #expect(try search(pattern, text) == expected, "/\(pattern)/ on \(text.debugDescription)")
        }
    }

    /// Random small patterns from the supported subset, on random short strings, agree with Swift's Regex (safe
    /// here: the strings are too short for its backtracking to matter).
    @Test func agreesWithSwiftRegexOnRandomPatterns() throws {
        var rng = SeededGenerator(state: 0xC0FFEE)
        let alphabet: [Character] = ["a", "b", "c", "1", " ", "_", "-"]
        func atom(_ depth: Int) -> String {
            switch Int.random(in: 0..<12, using: &rng) {
            case 0...3: return String(alphabet.prefix(4).randomElement(using: &rng)!)
            case 4: return "."
            case 5: return ["[ab]", "[^a]", "[a-c]", "[_-]", "[^ 1]", "[1-]"].randomElement(using: &rng)!
            case 6: return ["\\d", "\\w", "\\s", "\\D", "\\W", "\\S", "\\-"].randomElement(using: &rng)!
            default:
                guard depth > 0 else { return "a" }
                let branches = (0..<Int.random(in: 1...3, using: &rng)).map { _ in sequence(depth - 1) }
                return "(" + (Bool.random(using: &rng) ? "?:" : "") + branches.joined(separator: "|") + ")"
            }
        }
        func sequence(_ depth: Int) -> String {
            (0..<Int.random(in: 1...3, using: &rng)).map { _ -> String in
                let a = atom(depth)
                switch Int.random(in: 0..<10, using: &rng) {
                case 0: return a + "*"
                case 1: return a + "+"
                case 2: return a + "?"
                case 3:
                    let m = Int.random(in: 0...2, using: &rng)
                    return a + ["{\(m)}", "{\(m),}", "{\(m),\(m + Int.random(in: 0...2, using: &rng))}"]
                        .randomElement(using: &rng)!
                default: return a
                }
            }.joined()
        }
        var compared = 0
        var matchedCount = 0
        for _ in 0..<600 {
            var pattern = (0..<Int.random(in: 1...2, using: &rng)).map { _ in sequence(2) }.joined(separator: "|")
            if Int.random(in: 0..<4, using: &rng) == 0 { pattern = "^" + pattern }
            if Int.random(in: 0..<4, using: &rng) == 0 { pattern += "$" }
            let ours = try NamePattern(pattern)
            let theirs = try Regex(pattern)
            for _ in 0..<12 {
                let text = String((0..<Int.random(in: 0...8, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! })
                var budget = MatchBudget()
                let got = try ours.matches(text, budget: &budget)
                let want = try theirs.firstMatch(in: text) != nil
                #expect(got == want, "/\(pattern)/ on \(text.debugDescription): ours \(got), Swift Regex \(want)")
                compared += 1
                if want { matchedCount += 1 }
            }
        }
        // Both outcomes are well represented.
        #expect(matchedCount > compared / 5 && matchedCount < compared * 4 / 5)
    }

    /// The example: nested quantifiers against `x` + 20 `a`s + one other character took 32 s with Regex.
    /// Here the steps are bounded by text length x program size, whatever the nesting.
    @Test func pathologicalPatternsTakeFewSteps() throws {
        for n in [20, 25, 30, 1000] {
            let text = "x" + String(repeating: "a", count: n) + "b"
            let (matched, used) = try steps("^x(a+)+$", text)
            let program = try NamePattern("^x(a+)+$").programSize
            #expect(!matched)
            #expect(used <= 2 * program * (n + 2), "\(used) steps for n = \(n)")
            if n == 20 { #expect(used < 1_000, "the issue's 32-second case: \(used) steps") }
        }
        let heavy: [(String, String)] = [
            ("(a*)*b", String(repeating: "a", count: 4000)),
            ("(a|a)*c", String(repeating: "a", count: 4000)),
            ("(a|aa)+$x", String(repeating: "a", count: 4000)),
            ("(.*){10}y", String(repeating: "x", count: 4000)),
            ("^(\\w+\\s?)*$", String(repeating: "word ", count: 800) + "!"),
        ]
        for (pattern, text) in heavy {
            let program = try NamePattern(pattern).programSize
            let (matched, used) = try steps(pattern, text)
            #expect(!matched, "/\(pattern)/")
            // Linear: at most a few steps per (character, instruction) pair.
            #expect(used <= 3 * (text.count + 1) * program, "/\(pattern)/: \(used) steps, program \(program)")
        }
    }

    @Test func textIsCutAtTheCap() throws {
        let long = String(repeating: "a", count: NamePattern.maxTextBytes) + "needle"
        #expect(try !search("needle", long))
        #expect(try search("needle", String(repeating: "a", count: 100) + "needle"))
    }

    @Test func budgetRunsOut() throws {
        let p = try NamePattern("(a|b)*c")
        var budget = MatchBudget(limit: 1_000)
        #expect(throws: MatchBudget.Exhausted.self) { try p.matches(String(repeating: "a", count: 4000), budget: &budget) }
        // The budget spans calls: many short texts exhaust it too.
        var shared = MatchBudget(limit: 1_000)
        #expect(throws: MatchBudget.Exhausted.self) {
            for _ in 0..<1000 { _ = try p.matches("abababab", budget: &shared) }
        }
    }

    @Test(arguments: [
        ("(a)\\1", "backreference"), ("(?=a)b", "lookahead"), ("(?!a)b", "lookahead"), ("(?<=a)b", "lookbehind"),
        ("(?<!a)b", "lookbehind"), ("a*?", "lazy"), ("a+?", "lazy"), ("a{2}?", "lazy"), ("a*+", "possessive"),
        ("a++", "possessive"), ("(?i)abc", "not supported"), ("(?<n>a)", "not supported"), ("\\bword", "assertion"),
        ("\\x41", "escape"), ("(abc", "unclosed"), ("abc)", "unmatched"), ("[abc", "unclosed"), ("*a", "nothing to repeat"),
        ("a{2,1}", "minimum"), ("a{1000}", "more than 100"), ("a{x}", "malformed"), ("[z-a]", "backwards"),
        ("(a{100}){100}", "instructions"), ("a\\", "backslash"), ("[[:nope:]]", "unknown"),
    ])
    func refusals(pattern: String, reason: String) {
        #expect {
            _ = try NamePattern(pattern)
        } throws: { error in
            (error as? PatternError)?.message.contains(reason) == true
        }
    }

    @Test func lengthCap() throws {
        _ = try NamePattern(String(repeating: "a", count: NamePattern.maxPatternBytes))
        #expect(throws: PatternError.self) { try NamePattern(String(repeating: "a", count: NamePattern.maxPatternBytes + 1)) }
        // The 1 MiB alternation: refused before anything is compiled.
        let huge = (0..<100_000).map { "w\($0)" }.joined(separator: "|")
        #expect {
            _ = try NamePattern(huge)
        } throws: { error in (error as? PatternError)?.message.contains("limited to 256 bytes") == true }
    }
}
