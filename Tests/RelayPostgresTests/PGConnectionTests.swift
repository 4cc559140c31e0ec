// PGConnection against a real PostgreSQL (initdb + pg_ctl in a temp dir).
import Dispatch
import Foundation
import Testing
import RelayTestSupport
@testable import RelayPostgres

extension PostgreSQLTests {
    @Suite struct PGConnectionTests {
        @Test func connectsQueriesAndPassesParameters() async throws {
            guard let pg = try startServer() else { return }
            defer { pg.stop() }
            let c = try await connect(options(pg))
            #expect(c.isOpen)
            let sum = try await c.run("SELECT $1::int + $2::int AS sum, $3::text AS nothing", ["40", "2", nil])
            #expect(sum.columns == ["sum", "nothing"])
            #expect(sum.rows == [["42", nil]])
            _ = try await c.run("CREATE TABLE t (id serial PRIMARY KEY, v text UNIQUE)")
            let insert = try await c.run("INSERT INTO t (v) VALUES ($1), ($2)", ["a", "b"])
            #expect(insert.commandStatus == "INSERT 0 2")
            #expect(insert.affectedRows == 2)
            let update = try await c.run("UPDATE t SET v = v || $1", ["!"])
            #expect(update.affectedRows == 2)
            let rows = try await c.run("SELECT v FROM t ORDER BY id")
            #expect(rows.rows == [["a!"], ["b!"]])
            // A server error carries its SQLSTATE, and the connection goes on.
            do {
                _ = try await c.run("INSERT INTO t (v) VALUES ($1)", ["a!"])
                Issue.record("a duplicate was accepted")
            } catch let e as PGError {
                guard case .server(let state, _) = e else { Issue.record("not a server error: \(e)"); return }
                #expect(state == "23505")
            }
            #expect(try await c.run("SELECT count(*) AS n FROM t").value(0, "n") == "2")
            // The statement_timeout option reached the session.
            #expect(try await c.run("SHOW statement_timeout").rows == [["5s"]])
            c.close()
        }

        @Test func hostileValuesRoundTripUnchanged() async throws {
            guard let pg = try startServer() else { return }
            defer { pg.stop() }
            let c = try await connect(options(pg))
            _ = try await c.run("CREATE TABLE x (id integer PRIMARY KEY, v text)")
            let long = String(repeating: "0123456789abcdef'\\\"", count: 100 * 1024 / 19 + 1)
            let values: [String] = [
                "it's", "O''Brien", "\"quoted\"", "back\\slash\\\\", "\\x00not-a-nul", "'; DROP TABLE x; --",
                "$1", "$$ dollar $$", "-- comment", "/* c */", "%_ like", "\t\r\n tabs and newlines \r\n",
                "\u{200F}\u{202E}rtl override\u{202C}\u{200E}", "emoji 🧑‍🚀🏳️‍🌈 👍🏽", "e\u{301}\u{302}\u{303} combining",
                "\u{FFFD}\u{FFFE}\u{FFFF}\u{10000}\u{10FFFF}", "\u{EFFFF}\u{E0001}", "", " ", "ünïcödé-домен.рф",
                long,
            ]
            #expect(long.utf8.count >= 100 * 1024)
            for (i, v) in values.enumerated() {
                _ = try await c.run("INSERT INTO x (id, v) VALUES ($1::integer, $2)", [String(i), v])
            }
            for (i, v) in values.enumerated() {
                let back = try await c.run("SELECT v, length(v) AS n FROM x WHERE id = $1::integer", [String(i)])
                #expect(back.value(0, "v") == v, "value \(i) changed")
                #expect(back.value(0, "v")?.unicodeScalars.elementsEqual(v.unicodeScalars) == true)
                #expect(back.value(0, "n") == String(v.unicodeScalars.count))
                // Echoed as a parameter too, and matched by equality on the server.
                #expect(try await c.run("SELECT $1::text AS v", [v]).value(0, "v") == v)
                #expect(try await c.run("SELECT count(*) AS n FROM x WHERE v = $1", [v]).value(0, "n").map { Int($0)! }! >= 1)
            }
            #expect(try await c.run("SELECT count(*) AS n FROM x").value(0, "n") == String(values.count))
            // A NUL cannot travel in a text parameter: refused, not truncated.
            await #expect(throws: PGError.self) { _ = try await c.run("SELECT $1::text", ["a\u{0}b"]) }
            #expect(try await c.run("SELECT 1 AS one").value(0, "one") == "1")
            c.close()
        }

        @Test func queryTimeoutFiresAndTheConnectionRecovers() async throws {
            guard let pg = try startServer() else { return }
            defer { pg.stop() }
            let c = try await connect(options(pg))
            let start = DispatchTime.now()
            do {
                _ = try await c.run("SELECT pg_sleep(20)", timeout: .milliseconds(300))
                Issue.record("a 20 s sleep finished inside 300 ms")
            } catch let e as PGError {
                #expect(e == .timeout)
            }
            #expect(elapsed(since: start) < 2)
            // PQcancel stopped the statement: the connection serves the next one.
            #expect(try await c.run("SELECT 7 AS seven").value(0, "seven") == "7")
            #expect(elapsed(since: start) < 5)

            // The server's own statement_timeout, set per connection.
            let short = try await connect(options(pg, statementTimeoutMilliseconds: 200))
            do {
                _ = try await short.run("SELECT pg_sleep(5)")
                Issue.record("statement_timeout did not fire")
            } catch let e as PGError {
                #expect(e.isCancelled, "\(e)")
            }
            c.close()
            short.close()
        }

        @Test func connectFailsFastWhenNothingListens() async throws {
            guard let pg = try startServer() else { return }
            let o = options(pg)
            pg.stop()
            let start = DispatchTime.now()
            await #expect(throws: PGError.self) { _ = try await connect(o) }
            #expect(elapsed(since: start) < 6)
        }
    }
}

extension PostgreSQLTests {
    @Suite struct PGConnectionOptionsTests {
        @Test func sslModeReachesLibpq() async throws {
            guard let pg = try startServer() else { return }
            defer { pg.stop() }
            // The test server has no TLS: require and verify-full must refuse it.
            for mode in [PGSSLMode.require, .verifyFull] {
                var o = options(pg)
                o.sslMode = mode
                do {
                    _ = try await connect(o)
                    Issue.record("connected without TLS under sslmode \(mode.rawValue)")
                } catch let e as PGError {
                    guard case .connectFailed(let m) = e else { Issue.record("\(e)"); continue }
                    #expect(m.contains("SSL"), "\(m)")
                }
            }
        }

        @Test func aDroppedConnectionStillAnswers() async throws {
            guard let pg = try startServer() else { return }
            defer { pg.stop() }
            let result: PGResult = try await withCheckedThrowingContinuation { c in
                PGConnection.connect(options(pg), on: replies) { connected in
                    switch connected {
                    case .failure(let e): c.resume(throwing: e)
                    case .success(let connection):
                        // The caller keeps no reference past this call.
                        connection.query("SELECT pg_sleep(0.2), $1::text AS v", ["kept"], on: replies) { c.resume(with: $0) }
                    }
                }
            }
            #expect(result.value(0, "v") == "kept")
        }

        @Test func keywordsPutTheURLFirstAndTheServerSettingsAfter() {
            let o = PGConnectOptions(url: "postgresql://u@h/db?sslmode=disable", passfile: "/p", sslMode: .verifyFull,
                                     sslRootCert: "/ca.pem", statementTimeoutMilliseconds: 1500, connectTimeoutSeconds: 3,
                                     applicationName: "relayd mx1")
            let k = o.keywords
            #expect(k.first! == ("dbname", "postgresql://u@h/db?sslmode=disable"))
            #expect(k.contains { $0 == ("sslmode", "verify-full") })
            #expect(k.contains { $0 == ("options", "-c statement_timeout=1500") })
            #expect(k.contains { $0 == ("passfile", "/p") })
            #expect(k.contains { $0 == ("sslrootcert", "/ca.pem") })
            #expect(!k.contains { $0.0 == "password" })
        }
    }
}
