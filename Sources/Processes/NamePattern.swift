/// Process-name patterns (`--name`) matched in time linear in the text: a Thompson-NFA compiled to a small program and
/// run as a Pike VM (every live thread advances in lock step over the text; no backtracking, so `^x(a+)+$` costs the
/// same as `^xa+$`).
///
/// Hand-written on purpose: Swift's `Regex` (and NSRegularExpression) backtrack, so a hostile pattern could stall the
/// agent for seconds per process, and no library on this machine offers a linear-time regex engine for Swift (no RE2
/// or Rust `regex` binding is available to the package).
///
/// The supported subset (POSIX ERE with the common Perl escapes): literals; `.` (any character but newline);
/// bracket classes `[a-z0-9_-]`, `[^...]`, with `\d \w \s`, escapes and `[:alpha:]`-style classes inside; `\d \D \w
/// \W \s \S`, `\t \n \r`, escaped metacharacters (`\.`, `\(`, `\\`, ...); anchors `^` (start of text) and `$` (end of
/// text); groups `( )` and `(?: )` (nothing is captured); alternation `|`; quantifiers `* + ?` and `{m}`, `{m,}`,
/// `{m,n}` (bounds up to 100, expanded). Refused, with the reason: backreferences, lookaround, lazy and possessive
/// quantifiers, inline options and named groups, `\b` and other escapes outside the subset.
///
/// Caps bound the cost: the pattern's length (`maxPatternBytes`), the compiled program (`maxProgramSize`
/// instructions) and the text matched per string (`maxTextBytes`, longer texts are truncated); a `MatchBudget` bounds
/// the steps of all the matching one request does.
public struct NamePattern: Sendable, CustomStringConvertible {
    public static let maxPatternBytes = 256
    public static let maxProgramSize = 2_000
    public static let maxTextBytes = 4_096
    public static let maxRepeat = 100

    public let source: String
    let program: [Instruction]
    let code: Code

    public var description: String { source }
    public var programSize: Int { program.count }

    public init(_ pattern: String) throws(PatternError) {
        source = pattern
        guard pattern.utf8.count <= Self.maxPatternBytes else {
            throw PatternError(
                "is \(pattern.utf8.count) bytes long; patterns are limited to \(Self.maxPatternBytes) bytes")
        }
        var parser = Parser(Array(pattern.unicodeScalars))
        let tree = try parser.parse()
        var compiler = Compiler()
        try compiler.emit(tree)
        try compiler.append(.match)
        program = compiler.program
        code = Code(compiler.program, classes: compiler.classes)
    }

    /// Whether the pattern matches anywhere in `text` (its first `maxTextBytes` bytes). Each instruction a thread
    /// executes costs one step from `budget`; running out throws `MatchBudget.Exhausted`.
    public func matches(_ text: String, budget: inout MatchBudget) throws(MatchBudget.Exhausted) -> Bool {
        var scalars: [UInt32] = []
        var bytes = 0
        for s in text.unicodeScalars {
            bytes += UTF8.width(s)
            if bytes > Self.maxTextBytes { break }
            scalars.append(s.value)
        }
        let buffer = UnsafeMutablePointer<UInt32>.allocate(capacity: max(1, scalars.count))
        defer { buffer.deallocate() }
        for (i, v) in scalars.enumerated() { buffer[i] = v }
        var vm = PikeVM(code, text: buffer, count: scalars.count)
        defer { vm.release() }
        let matched = vm.run(limit: budget.limit - budget.used)
        budget.used += vm.steps
        guard let matched else { throw MatchBudget.Exhausted(limit: budget.limit) }
        return matched
    }
}

/// The program in flat arrays behind raw pointers: the matching loop touches nothing else (fast even unoptimized;
/// `PikeVM` switches on the opcode numbers as literals, since a static let costs a lazy-init check per use there).
final class Code: @unchecked Sendable {
    static let scalar: UInt8 = 0, any: UInt8 = 1, set: UInt8 = 2, split: UInt8 = 3, jump: UInt8 = 4
    static let assertStart: UInt8 = 5, assertEnd: UInt8 = 6, match: UInt8 = 7

    let count: Int
    let op: UnsafeMutablePointer<UInt8>
    let x: UnsafeMutablePointer<Int32>
    let y: UnsafeMutablePointer<Int32>
    /// Per class: which ASCII characters it holds (bits 0-63, 64-127).
    let asciiLow: UnsafeMutablePointer<UInt64>
    let asciiHigh: UnsafeMutablePointer<UInt64>
    let classes: [CharClass]

    init(_ program: [Instruction], classes: [CharClass]) {
        count = program.count
        op = .allocate(capacity: count)
        x = .allocate(capacity: count)
        y = .allocate(capacity: count)
        for (i, inst) in program.enumerated() {
            var (o, a, b): (UInt8, Int32, Int32) = (0, 0, 0)
            switch inst {
            case .scalar(let c): (o, a) = (Code.scalar, Int32(bitPattern: c.value))
            case .any: o = Code.any
            case .set(let k): (o, a) = (Code.set, Int32(k))
            case .split(let l, let r): (o, a, b) = (Code.split, Int32(l), Int32(r))
            case .jump(let l): (o, a) = (Code.jump, Int32(l))
            case .assertStart: o = Code.assertStart
            case .assertEnd: o = Code.assertEnd
            case .match: o = Code.match
            }
            op[i] = o
            x[i] = a
            y[i] = b
        }
        self.classes = classes
        asciiLow = .allocate(capacity: max(1, classes.count))
        asciiHigh = .allocate(capacity: max(1, classes.count))
        for (k, cls) in classes.enumerated() {
            var low: UInt64 = 0
            var high: UInt64 = 0
            for v in UInt32(0)..<128 where cls.contains(Unicode.Scalar(v)!) {
                if v < 64 { low |= 1 << UInt64(v) } else { high |= 1 << UInt64(v - 64) }
            }
            asciiLow[k] = low
            asciiHigh[k] = high
        }
    }

    deinit {
        op.deallocate()
        x.deallocate()
        y.deallocate()
        asciiLow.deallocate()
        asciiHigh.deallocate()
    }
}

/// One search: thread lists as sparse sets over program counters, advanced in lock step over the text. Everything
/// the loop touches is a local raw pointer (debug builds run this too: no retain/release or bounds checks per step).
private struct PikeVM {
    let code: Code
    let text: UnsafeMutablePointer<UInt32>
    let count: Int
    let memory: UnsafeMutablePointer<Int32>
    var steps = 0

    init(_ code: Code, text: UnsafeMutablePointer<UInt32>, count: Int) {
        self.code = code
        self.text = text
        self.count = count
        let n = code.count
        // Two dense and two sparse lists of n, and a stack of 2n + 2 (each pc pushes at most two successors once).
        memory = .allocate(capacity: 6 * n + 2)
        memory.initialize(repeating: 0, count: 6 * n + 2)
    }

    func release() { memory.deallocate() }

    /// True or false, or nil when more than `limit` steps were needed.
    mutating func run(limit: Int) -> Bool? {
        let n = code.count
        let op = code.op, x = code.x, y = code.y, low = code.asciiLow, high = code.asciiHigh
        let text = self.text, count = self.count
        var current = memory, next = memory + n
        var currentSparse = memory + 2 * n, nextSparse = memory + 3 * n
        let stack = memory + 4 * n
        var currentCount = 0, nextCount = 0
        var steps = 0
        defer { self.steps = steps }
        let anchored = op[0] == 5  // assertStart
        var position = 0
        while true {
            // Unanchored search: a new thread starts at every position (only at 0 for a pattern starting with ^).
            if position == 0 || !anchored {
                if Self.add(0, position, count, op, x, y, current, currentSparse, &currentCount, stack, &steps) {
                    return true
                }
            }
            if position >= count || (currentCount == 0 && anchored) { return false }
            if steps > limit { return nil }
            let c = text[position]
            nextCount = 0
            var i = 0
            while i < currentCount {
                let pc = Int(current[i])
                i += 1
                steps += 1
                let advance: Bool
                switch op[pc] {
                case 0: advance = UInt32(bitPattern: x[pc]) == c
                case 1: advance = c != 10
                case 2:
                    let k = Int(x[pc])
                    if c < 64 {
                        advance = low[k] & (1 << UInt64(c)) != 0
                    } else if c < 128 {
                        advance = high[k] & (1 << UInt64(c - 64)) != 0
                    } else {
                        advance = code.classes[k].contains(Unicode.Scalar(c) ?? "\u{FFFD}")
                    }
                default: advance = false  // match, split, jump and assertions never sit on a thread list
                }
                if advance, Self.add(pc + 1, position + 1, count, op, x, y, next, nextSparse, &nextCount, stack, &steps) {
                    return true
                }
            }
            swap(&current, &next)
            swap(&currentSparse, &nextSparse)
            currentCount = nextCount
            position += 1
        }
    }

    /// Adds the thread at `start` and everything it reaches without consuming a character. True when one matches.
    private static func add(
        _ start: Int, _ position: Int, _ count: Int, _ op: UnsafeMutablePointer<UInt8>, _ x: UnsafeMutablePointer<Int32>,
        _ y: UnsafeMutablePointer<Int32>, _ dense: UnsafeMutablePointer<Int32>, _ sparse: UnsafeMutablePointer<Int32>,
        _ size: inout Int, _ stack: UnsafeMutablePointer<Int32>, _ steps: inout Int
    ) -> Bool {
        var top = 1
        stack[0] = Int32(start)
        while top > 0 {
            top -= 1
            let pc = Int(stack[top])
            let slot = Int(sparse[pc])
            if slot < size && Int(dense[slot]) == pc { continue }
            sparse[pc] = Int32(size)
            dense[size] = Int32(pc)
            size += 1
            steps += 1
            switch op[pc] {
            case 7: return true
            case 4:
                stack[top] = x[pc]
                top += 1
            case 3:
                stack[top] = y[pc]
                stack[top + 1] = x[pc]
                top += 2
            case 5:
                if position == 0 {
                    stack[top] = Int32(pc + 1)
                    top += 1
                }
            case 6:
                if position == count {
                    stack[top] = Int32(pc + 1)
                    top += 1
                }
            default: break
            }
        }
        return false
    }
}

/// A pattern outside the supported subset or over a cap; `message` completes "the pattern ...".
public struct PatternError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The steps all the matching for one request may take (each a few nanoseconds).
public struct MatchBudget: Sendable {
    /// Some 10x what a plain pattern costs against a busy host (500 processes, long command lines). Measured at about
    /// 4 ns a step in a release build and 70 ns in a debug build: 4 million steps are ~20 ms and ~0.3 s.
    public static let perRequest = 4_000_000

    public var limit: Int
    public var used = 0
    public init(limit: Int = MatchBudget.perRequest) { self.limit = limit }

    public struct Exhausted: Error, Sendable, CustomStringConvertible {
        public var limit: Int
        public var description: String { "matching took more than \(limit) steps" }
    }
}

enum Instruction: Sendable, Equatable {
    case scalar(Unicode.Scalar)
    case any
    case set(Int)
    case split(Int, Int)
    case jump(Int)
    case assertStart
    case assertEnd
    case match
}

struct CharClass: Sendable, Equatable {
    enum Item: Sendable, Equatable {
        case range(UInt32, UInt32)
        case named(Named, negated: Bool)
    }
    enum Named: String, Sendable, Equatable {
        case digit, word, space, alpha, alnum, upper, lower, punct, xdigit
    }
    var items: [Item]
    var negated: Bool

    func contains(_ c: Unicode.Scalar) -> Bool {
        var hit = false
        for item in items {
            switch item {
            case .range(let lo, let hi): hit = c.value >= lo && c.value <= hi
            case .named(let n, let neg): hit = Self.test(n, c) != neg
            }
            if hit { break }
        }
        return hit != negated
    }

    static func test(_ n: Named, _ c: Unicode.Scalar) -> Bool {
        let p = c.properties
        switch n {
        case .digit: return p.numericType == .decimal
        case .word: return p.isAlphabetic || p.numericType == .decimal || c == "_" || p.generalCategory == .nonspacingMark
        case .space: return p.isWhitespace
        case .alpha: return p.isAlphabetic
        case .alnum: return p.isAlphabetic || p.numericType == .decimal
        case .upper: return p.isUppercase
        case .lower: return p.isLowercase
        case .punct: return c.isASCII && (0x21...0x7E).contains(c.value) && !p.isAlphabetic && p.numericType != .decimal
        case .xdigit: return p.isASCIIHexDigit
        }
    }
}

/// The syntax tree.
indirect enum Node: Sendable {
    case empty
    case scalar(Unicode.Scalar)
    case any
    case set(CharClass)
    case start
    case end
    case concat([Node])
    case alternate([Node])
    case `repeat`(Node, min: Int, max: Int?)
}

private struct Parser {
    let s: [Unicode.Scalar]
    var i = 0
    var depth = 0
    init(_ s: [Unicode.Scalar]) { self.s = s }

    var atEnd: Bool { i >= s.count }
    func peek(_ k: Int = 0) -> Unicode.Scalar? { i + k < s.count ? s[i + k] : nil }

    mutating func parse() throws(PatternError) -> Node {
        let n = try alternation()
        if !atEnd {
            // Only an unbalanced ')' stops the top-level alternation early.
            throw PatternError("has an unmatched ')' at offset \(i)")
        }
        return n
    }

    mutating func alternation() throws(PatternError) -> Node {
        var branches = [try concatenation()]
        while peek() == "|" {
            i += 1
            branches.append(try concatenation())
        }
        return branches.count == 1 ? branches[0] : .alternate(branches)
    }

    mutating func concatenation() throws(PatternError) -> Node {
        var items: [Node] = []
        while let c = peek(), c != "|", c != ")" {
            var atom = try atom()
            atom = try quantified(atom)
            items.append(atom)
        }
        if items.isEmpty { return .empty }
        return items.count == 1 ? items[0] : .concat(items)
    }

    mutating func quantified(_ atom: Node) throws(PatternError) -> Node {
        var node = atom
        var quantifiers = 0
        while let c = peek() {
            let bounds: (Int, Int?)
            let start = i
            switch c {
            case "*": bounds = (0, nil); i += 1
            case "+": bounds = (1, nil); i += 1
            case "?": bounds = (0, 1); i += 1
            case "{": bounds = try braces()
            default: return node
            }
            quantifiers += 1
            if quantifiers > 1 {
                let text = String(String.UnicodeScalarView(s[start..<i]))
                switch text {
                case "?": throw PatternError("uses a lazy quantifier ('\(text)' after a quantifier), which is not supported")
                case "+": throw PatternError("uses a possessive quantifier ('+' after a quantifier), which is not supported")
                default: throw PatternError("repeats a quantifier ('\(text)' at offset \(start)); put the inner part in ( )")
                }
            }
            switch atom {
            case .start, .end: throw PatternError("puts a quantifier after an anchor at offset \(start)")
            case .empty: throw PatternError("has a quantifier with nothing to repeat at offset \(start)")
            default: break
            }
            node = .repeat(node, min: bounds.0, max: bounds.1)
        }
        return node
    }

    /// `{m}`, `{m,}`, `{m,n}`.
    mutating func braces() throws(PatternError) -> (Int, Int?) {
        let start = i
        i += 1
        func number(_ p: inout Parser) -> Int? {
            var digits = ""
            while let c = p.peek(), ("0"..."9").contains(c), digits.count < 6 {
                digits.unicodeScalars.append(c)
                p.i += 1
            }
            return Int(digits)
        }
        let bad = PatternError("has a malformed repetition at offset \(start) (write {m}, {m,} or {m,n}, or \\{ for a literal brace)")
        guard let lo = number(&self) else { throw bad }
        var hi: Int? = lo
        if peek() == "," {
            i += 1
            hi = peek() == "}" ? nil : number(&self)
            if hi == nil && peek() != "}" { throw bad }
        }
        guard peek() == "}" else { throw bad }
        i += 1
        if lo > NamePattern.maxRepeat || (hi ?? 0) > NamePattern.maxRepeat {
            throw PatternError("repeats more than \(NamePattern.maxRepeat) times at offset \(start)")
        }
        if let hi, hi < lo { throw PatternError("has a repetition {\(lo),\(hi)} whose maximum is below its minimum") }
        return (lo, hi)
    }

    mutating func atom() throws(PatternError) -> Node {
        let c = s[i]
        let at = i
        i += 1
        switch c {
        case "(":
            if peek() == "?" {
                if peek(1) == ":" {
                    i += 2
                } else {
                    let next = peek(1).map { String($0) } ?? ""
                    let after = peek(2).map { String($0) } ?? ""
                    switch next + after {
                    case "<=", "<!":
                        throw PatternError("uses lookbehind '(?\(next)\(after)' at offset \(at), which is not supported")
                    default: break
                    }
                    if next == "=" || next == "!" {
                        throw PatternError("uses lookahead '(?\(next)' at offset \(at), which is not supported")
                    }
                    throw PatternError(
                        "uses '(?' at offset \(at) (inline options, named or atomic groups), which is not supported; only (?: ) and ( ) groups are")
                }
            }
            depth += 1
            if depth > 64 { throw PatternError("nests groups too deeply") }
            let inner = try alternation()
            depth -= 1
            guard peek() == ")" else { throw PatternError("has an unclosed '(' at offset \(at)") }
            i += 1
            return inner
        case ")": throw PatternError("has an unmatched ')' at offset \(at)")
        case "*", "+", "?": throw PatternError("has a quantifier '\(c)' with nothing to repeat at offset \(at)")
        case "{":
            throw PatternError("has a '{' with nothing to repeat at offset \(at) (write \\{ for a literal brace)")
        case ".": return .any
        case "^": return .start
        case "$": return .end
        case "[": return .set(try bracket(at))
        case "\\": return try escape(inClass: false).node
        default: return .scalar(c)
        }
    }

    enum Escaped {
        case scalar(Unicode.Scalar)
        case named(CharClass.Named, negated: Bool)
        var node: Node {
            switch self {
            case .scalar(let c): return .scalar(c)
            case .named(let n, let neg): return .set(CharClass(items: [.named(n, negated: neg)], negated: false))
            }
        }
    }

    /// After a backslash.
    mutating func escape(inClass: Bool) throws(PatternError) -> Escaped {
        guard let c = peek() else { throw PatternError("ends with a lone backslash") }
        let at = i - 1
        i += 1
        switch c {
        case "d": return .named(.digit, negated: false)
        case "D": return .named(.digit, negated: true)
        case "w": return .named(.word, negated: false)
        case "W": return .named(.word, negated: true)
        case "s": return .named(.space, negated: false)
        case "S": return .named(.space, negated: true)
        case "t": return .scalar("\t")
        case "n": return .scalar("\n")
        case "r": return .scalar("\r")
        case "1"..."9":
            throw PatternError("uses a backreference '\\\(c)' at offset \(at), which is not supported")
        case "b", "B", "A", "z", "Z", "G":
            throw PatternError("uses the assertion '\\\(c)' at offset \(at), which is not supported (use ^ or $)")
        default:
            if c.isASCII && (c.properties.isAlphabetic || c.properties.numericType != nil) {
                throw PatternError("uses the escape '\\\(c)' at offset \(at), which is not supported")
            }
            return .scalar(c)  // an escaped metacharacter or punctuation: itself
        }
    }

    mutating func bracket(_ at: Int) throws(PatternError) -> CharClass {
        var cls = CharClass(items: [], negated: false)
        if peek() == "^" {
            cls.negated = true
            i += 1
        }
        var first = true
        while true {
            guard let c = peek() else { throw PatternError("has an unclosed '[' at offset \(at)") }
            if c == "]" && !first {
                i += 1
                break
            }
            first = false
            // [:alpha:] and friends.
            if c == "[" && peek(1) == ":" {
                var j = i + 2
                var name = ""
                while j < s.count, s[j] != ":" { name.unicodeScalars.append(s[j]); j += 1 }
                guard j + 1 < s.count, s[j + 1] == "]", let named = CharClass.Named(rawValue: name)
                else { throw PatternError("has an unknown character class '[:\(name):]' at offset \(i)") }
                cls.items.append(.named(named, negated: false))
                i = j + 2
                continue
            }
            if c == "[" { throw PatternError("has a '[' inside a bracket class at offset \(i) (write \\[)") }
            i += 1
            var low: Unicode.Scalar
            if c == "\\" {
                switch try escape(inClass: true) {
                case .named(let n, let neg):
                    cls.items.append(.named(n, negated: neg))
                    continue
                case .scalar(let e): low = e
                }
            } else {
                low = c
            }
            // A range, unless '-' is last in the class.
            if peek() == "-", let after = peek(1), after != "]" {
                i += 1
                var high = after
                i += 1
                if after == "\\" {
                    guard case .scalar(let e) = try escape(inClass: true) else {
                        throw PatternError("has a range ending in a class escape at offset \(i)")
                    }
                    high = e
                } else if after == "[" {
                    throw PatternError("has a '[' inside a bracket class at offset \(i - 1) (write \\[)")
                }
                guard low.value <= high.value else {
                    throw PatternError("has a backwards range '\(low)-\(high)' in a bracket class")
                }
                cls.items.append(.range(low.value, high.value))
            } else {
                cls.items.append(.range(low.value, low.value))
            }
        }
        return cls
    }
}

private struct Compiler {
    var program: [Instruction] = []
    var classes: [CharClass] = []

    mutating func append(_ inst: Instruction) throws(PatternError) {
        guard program.count < NamePattern.maxProgramSize else {
            throw PatternError(
                "compiles to more than \(NamePattern.maxProgramSize) instructions; use fewer or smaller repetitions")
        }
        program.append(inst)
    }

    mutating func emit(_ node: Node) throws(PatternError) {
        switch node {
        case .empty: break
        case .scalar(let c): try append(.scalar(c))
        case .any: try append(.any)
        case .set(let cls):
            let index = classes.firstIndex(of: cls) ?? classes.count
            if index == classes.count { classes.append(cls) }
            try append(.set(index))
        case .start: try append(.assertStart)
        case .end: try append(.assertEnd)
        case .concat(let items): for n in items { try emit(n) }
        case .alternate(let branches):
            // split L1, next; L1: a; jump end; next: split L2, ...; last branch
            var jumps: [Int] = []
            for (k, b) in branches.enumerated() {
                if k < branches.count - 1 {
                    let split = program.count
                    try append(.split(split + 1, 0))
                    try emit(b)
                    jumps.append(program.count)
                    try append(.jump(0))
                    program[split] = .split(split + 1, program.count)
                } else {
                    try emit(b)
                }
            }
            for j in jumps { program[j] = .jump(program.count) }
        case .repeat(let inner, let min, let max):
            for _ in 0..<min { try emit(inner) }
            if let max {
                // Each optional copy: split body, skip.
                var splits: [Int] = []
                for _ in min..<max {
                    splits.append(program.count)
                    try append(.split(program.count + 1, 0))
                    try emit(inner)
                }
                for s in splits { program[s] = .split(s + 1, program.count) }
            } else {
                // L: split body, out; body; jump L
                let loop = program.count
                try append(.split(loop + 1, 0))
                try emit(inner)
                try append(.jump(loop))
                program[loop] = .split(loop + 1, program.count)
            }
        }
    }
}
