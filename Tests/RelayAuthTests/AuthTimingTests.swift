// AUTH must not tell which names exist (issue 18, item 7). For users files
// of one cost each, a known name with a wrong password and an unknown name
// are timed in alternation in one run, and the ratio of the two medians
// must be near 1: a ratio, so a slow or busy machine moves both sides
// alike. How names are spread over the decoys of a file that mixes costs is
// checked by counting, not timing.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Testing
@testable import RelayModel
@testable import RelayAuth
import RelayTestSupport

struct TimedUsersFile: CustomTestStringConvertible, Sendable {
    let name: String
    let text: String
    /// The name in the file whose wrong-password time is the reference.
    let known: String
    /// Alternating pairs of measurements; fewer for the slow settings.
    let pairs: Int
    var testDescription: String { name }
}

private let sha512Users = """
    a:$6$z5yGLBbBggOUt3sk$Lc1kFsFCg0kQ79XULWqzj31XuLioPWLqCu571Jv9Ca.y2/p/IV8UibJcV5yOc1xOkd2zOgE1fXM8mkBwA95VE/
    b:$6$LSKP4.9dUvMtWDC7$5sBiL6hLXJLGNf.HEvGv8b/JRU8DmgHCwra0HFzepXHpSZWF.2pBjl9H2SVkJ3WPZFGXPjACWyJ9Gd5oOQ4pP0
    c:$6$jT25292W/v7eHSkM$r5lvKe5mlo957JVFGDJIWJFpiZ3eIYixxWrStcrtTojhocHkCT95/VSPWklBV2kbVKDzLy4IVne5auyjpUGiq/
    """
private let yescryptJ75Users = """
    a:$y$j75$Zq8DI8TwdqHci5IQacVH90$a4LfIn2kJXvh7RdwYd9clfJTirPVKcXzKPH1avms42C
    b:$y$j75$Br4GRzHvvK7cUZcVKE4go.$bIAiDCD.3eYQPwDEyrDzb/N1cqNxBb4xKkEUOpZ8Mi3
    c:$y$j75$IDekIiSyyR3U78rN4zE4u.$PbEbTfGwUonXVVNVwLbLlxAoQ97vjTnKss1pXkM36M1
    """

/// Passwords: the first user of each setting has "pw1", the next "pw2".
let timedUsersFiles = [
    TimedUsersFile(name: "SHA-512-crypt, default rounds", text: sha512Users, known: "a", pairs: 40),
    TimedUsersFile(name: "SHA-512-crypt, rounds=20000", text: """
        a:$6$rounds=20000$Rba5SOCsOy7oV3GM$VmoW7NaMnlsflFVI1PI5Q9bvSMKv85G43b06hwQ8MiC9eIwbLdhmHBreec9IfMAdDdpVVaR1EpkSi0xle3jLj/
        """, known: "a", pairs: 16),
    TimedUsersFile(name: "yescrypt j75 (low cost)", text: yescryptJ75Users, known: "a", pairs: 40),
    TimedUsersFile(name: "yescrypt j9T (mkpasswd's default)", text: """
        a:$y$j9T$ehwucu77uSZbg.BIbgcRH/$8DtUNzpgcxOERAlayk1cSetcrEyo8FvQqOAITkMDv6A
        b:$y$j9T$yqcYfCzMfUtkXm6sKRTJo0$O0FKoyolXO8d/Ql.k19t2wekXOwyKdWA7kTggPxp6YA
        """, known: "a", pairs: 12),
    TimedUsersFile(name: "bcrypt cost 5", text: """
        a:$2b$05$I6iaWWBgRkLSpTVWnkH0x.uJ8ZY8cx.wNQLbvlaLMoNwt3nOVQk5W
        b:$2b$05$GoZpIwgePtKPIYW4IJSKL.Gd45TXkDihJR14.9lEqpejjU.4kHTUy
        """, known: "a", pairs: 20),
    // A 21-character yescrypt salt is one crypt refuses at once; that user
    // must cost what an unknown name costs, not nothing.
    TimedUsersFile(name: "yescrypt j75 with a hash crypt refuses", text: yescryptJ75Users + """

        broken:$y$j75$Zq8DI8TwdqHci5IQacVH9$a4LfIn2kJXvh7RdwYd9clfJTirPVKcXzKPH1avms42C
        """, known: "broken", pairs: 40),
]

/// The median time of `a` over the median time of `b`, measured in
/// alternating order so that neither side always runs first. The time is
/// the CPU time of this thread: the work a check does is what a prober's
/// clock sees, and this way other processes taking the CPU (builds, other
/// tests) do not land on one side or the other.
func medianTimeRatio(pairs: Int, _ a: () -> Void, _ b: () -> Void) -> Double {
    func time(_ body: () -> Void) -> UInt64 {
        func now() -> UInt64 {
            var ts = timespec()
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
            return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
        }
        let start = now()
        body()
        return now() - start
    }
    a(); b()  // warm up
    var ta: [UInt64] = [], tb: [UInt64] = []
    for i in 0..<pairs {
        if i.isMultiple(of: 2) {
            ta.append(time(a)); tb.append(time(b))
        } else {
            tb.append(time(b)); ta.append(time(a))
        }
    }
    func median(_ xs: [UInt64]) -> Double {
        let s = xs.sorted()
        return s.count.isMultiple(of: 2) ? Double(s[s.count / 2 - 1] + s[s.count / 2]) / 2 : Double(s[s.count / 2])
    }
    return median(ta) / median(tb)
}

@Suite(.serialized) struct AuthTiming {
    @Test("an unknown name costs what a known name with a wrong password costs", arguments: timedUsersFiles)
    func unknownCostsWhatKnownCosts(_ file: TimedUsersFile) {
        let (users, problems) = UsersFile.parse(file.text)
        #expect(problems.isEmpty)
        let verifier = PasswordVerifier(users: users)
        let wrong = Array("not the password".utf8)
        var unknownNames = (0..<(file.pairs + 1)).map { "nobody\($0)@example.test" }.makeIterator()
        let ratio = medianTimeRatio(pairs: file.pairs,
                                    { #expect(!verifier.verify(username: unknownNames.next()!, password: wrong)) },
                                    { #expect(!verifier.verify(username: file.known, password: wrong)) })
        print("AUTH timing, \(file.name): unknown/known median ratio \(ratio)")
        // A decoy of the wrong cost is off by 2x or more (rounds 5000 vs
        // 20000 is 4x; see the next test); ±30 % around 1 tolerates what a
        // loaded 2-core machine does to CPU-time medians (0.77 was seen for
        // 16 pairs while helpers were compiling) and still catches that.
        #expect((0.7...1.43).contains(ratio), "unknown/known = \(ratio)")
    }

    @Test("the ratio test sees a decoy of the wrong cost: the old fixed yescrypt decoy in a SHA-512-crypt file")
    func oldFixedDecoyIsCaught() {
        let users = UsersFile.parse(sha512Users).0
        let verifier = PasswordVerifier(users: users)
        let wrong = Array("not the password".utf8)
        let ratio = medianTimeRatio(pairs: 12,
                                    { _ = PasswordVerifier.verify(password: wrong, hash: DecoyHashes.fallback) },
                                    { _ = verifier.verify(username: "a", password: wrong) })
        print("AUTH timing, old fixed decoy in a SHA-512-crypt file: unknown/known median ratio \(ratio)")
        #expect(ratio > 2, "unknown/known = \(ratio)")
    }
}

@Suite struct UnknownUserDecoys {
    @Test("each cost in the file gets one decoy of that very cost", arguments: timedUsersFiles)
    func oneDecoyPerCost(_ file: TimedUsersFile) throws {
        let users = UsersFile.parse(file.text).0
        let costs = Set(users.hashes.values.compactMap { CryptSetting(hash: $0)?.cost })
        let decoys = DecoyHashes(users: users).entries.map(\.decoy)
        let decoyCosts = try decoys.map { try #require(CryptSetting(hash: $0)).cost }
        // A cost whose every hash crypt refuses has no decoy: its users are
        // checked against the decoy an unknown name would get.
        let refused = file.known == "broken" ? 1 : 0
        #expect(Set(decoyCosts).count == decoys.count)
        #expect(Set(decoyCosts).isSubset(of: costs))
        #expect(decoyCosts.count == costs.count - refused)
        for decoy in decoys { #expect(!users.hashes.values.contains(decoy)) }
    }

    @Test("in a file that mixes costs, unknown names get each cost in the file's shares, each name always the same")
    func mixedFileShares() throws {
        let users = UsersFile.parse(sha512Users + "\nd:$y$j75$Zq8DI8TwdqHci5IQacVH90$a4LfIn2kJXvh7RdwYd9clfJTirPVKcXzKPH1avms42C").0
        let decoys = DecoyHashes(users: users)
        #expect(decoys.entries.map(\.upTo) == [0.75, 1.0])
        let names = (0..<4000).map { "user\($0)@example.test" }
        let yescrypt = names.filter { decoys.hash(forUnknown: $0).hasPrefix("$y$") }.count
        #expect(abs(Double(yescrypt) / Double(names.count) - 0.25) < 0.04, "\(yescrypt) of \(names.count)")
        for name in names.prefix(100) { #expect(decoys.hash(forUnknown: name) == decoys.hash(forUnknown: name)) }
        #expect(DecoyHashes(users: UsersFile.parse("").0).hash(forUnknown: "x") == DecoyHashes.fallback)
    }

    @Test("answers", arguments: [
        ("a", "pw1", true), ("b", "pw2", true), ("a", "pw2", false), ("a", "", false),
        ("nobody", "pw1", false), ("A", "pw1", false), ("a", "pw1\0", false), ("", "pw1", false),
    ])
    func answers(_ user: String, _ password: String, _ expected: Bool) {
        let verifier = PasswordVerifier(users: UsersFile.parse(sha512Users).0)
        #expect(verifier.verify(username: user, password: Array(password.utf8)) == expected)
    }

    @Test("a hash crypt refuses never matches")
    func refusedHashNeverMatches() {
        let users = UsersFile.parse(yescryptJ75Users + "\nbroken:$y$j75$Zq8DI8TwdqHci5IQacVH9$a4LfIn2kJXvh7RdwYd9clfJTirPVKcXzKPH1avms42C").0
        #expect(!PasswordVerifier(users: users).verify(username: "broken", password: Array("pw1".utf8)))
    }

    @Test("hashes with missing fields are refused at load", arguments: [
        ("$y$j9T$salt$", false), ("$y$j9T$digestonly", false), ("$y$$salt$digest", false),
        ("$6$rounds=many$salt$digest", false), ("$6$salt$", false), ("$6$", false),
        ("$2b$5$I6iaWWBgRkLSpTVWnkH0x.uJ8ZY8cx.wNQLbvlaLMoNwt3nOVQk5W", false),
        ("$2b$05$I6iaWWBgRkLSpTVWnkH0x.uJ8ZY8cx.wNQLbvlaLMoNwt3nOVQk5", false),
        ("$y$j9T$ehwucu77uSZbg.BIbgcRH/$8DtUNzpgcxOERAlayk1cSetcrEyo8FvQqOAITkMDv6A", true),
        ("$6$rounds=20000$Rba5SOCsOy7oV3GM$VmoW7NaMnlsflFVI1PI5Q9bvSMKv85G43b06hwQ8MiC9eIwbLdhmHBreec9IfMAdDdpVVaR1EpkSi0xle3jLj/", true),
        ("$2y$05$I6iaWWBgRkLSpTVWnkH0x.uJ8ZY8cx.wNQLbvlaLMoNwt3nOVQk5W", true),
    ])
    func malformedHashes(_ hash: String, _ accepted: Bool) {
        let (users, problems) = UsersFile.parse("u:\(hash)")
        #expect((users.hashes["u"] != nil) == accepted)
        #expect(problems.map(\.message) == (accepted ? [] : ["user u: malformed hash"]))
    }
}
