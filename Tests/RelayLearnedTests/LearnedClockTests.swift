import Testing
@testable import RelayLearned

@Suite struct LearnedClockTests {
    @Test(arguments: [
        (0, "1970-01-01 00:00:00 UTC"),
        (951_782_400, "2000-02-29 00:00:00 UTC"),
        (1_764_633_600 + 3_661, "2025-12-02 01:01:01 UTC"),
        (4_107_542_399, "2100-02-28 23:59:59 UTC"),
    ])
    func formats(t: Int, text: String) {
        #expect(LearnedClock.utc(t) == text)
    }

    @Test(arguments: [
        ("2026-12-31", 1_798_675_200),
        ("2000-02-29", 951_782_400),
        ("2026-12-31T08:00:00Z", 1_798_675_200 + 8 * 3600),
    ])
    func parses(text: String, t: Int) {
        #expect(LearnedClock.parse(text) == t)
    }

    @Test(arguments: ["2026-02-29", "2026-13-01", "2026-00-10", "2026-1-01", "2026-12-31T24:00:00Z", "2026-12-31 08:00:00",
                      "20261231", "", "2026-12-31T08:00:00", "+026-12-31", "2026-12-3x"])
    func refusesNonDates(text: String) {
        #expect(LearnedClock.parse(text) == nil)
    }
}
