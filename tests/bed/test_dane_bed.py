"""The bed's DNSSEC and DANE part checks itself: the resolver validates
(secure answers carry AD, unsigned .test data does not, the spoiled TLSA
RRset is SERVFAIL), every TLSA record matches, or on purpose does not
match, what the receiver really presents after STARTTLS (fetched with
openssl s_client and hashed here, not by the bed's own helpers), the
expired leaf is expired, the DANE-TA chain is sent or left out as the row
says, and the resolver's query log records what clients asked."""
import base64
import hashlib
import re
import smtplib
import ssl
import subprocess
import uuid

import dns.flags
import dns.rcode
import pytest

from bed import AUTH_DNS_IP, DNSSEC_ZONE, Bed, load_scenarios

SCENARIOS = load_scenarios()
DANE = [s for s in SCENARIOS if s.get("role") == "dane"]
HOSTS = [(s, mx) for s in DANE for mx in s["mx"]]


@pytest.fixture(scope="module")
def bed():
    b = Bed().start()
    yield b
    b.stop()


def signed(name):
    return name == DNSSEC_ZONE or name.endswith("." + DNSSEC_ZONE)


def ask(bed, name, rdtype, **kw):
    r = bed.dns_query(name, rdtype, **kw)
    assert r is not None, f"no answer for {name} {rdtype}"
    return dns.rcode.to_text(r.rcode()), bool(r.flags & dns.flags.AD), [rd.to_text() for rrset in r.answer
                                                                       for rd in rrset if rrset.rdtype != 46]


# --- what the table asks for --------------------------------------------------

def test_the_dane_rows_cover_the_required_cases():
    by_name = {s["name"]: s for s in DANE}
    assert {"dane-ee-wrongname", "dane-ee-expired", "dane-ta", "dane-ta-wrongname", "dane-ta-nochain",
            "dane-nomatch", "dane-unusable", "dane-bogus", "dane-insecure-host", "dane-strip", "dane-and-sts",
            "dane-lowered", "dane-mx-insecure", "dane-mx-insecure-nomatch"} <= set(by_name)
    for s in DANE:
        assert s["dane_expect"] in ("dane-tls", "tls", "deferred"), s["name"]
        assert all(mx.get("tlsa") for mx in s["mx"]), s["name"]
    assert by_name["dane-and-sts"]["sts"]["mode"] == "enforce"
    # One domain whose MX RRset is insecure while its MX host is secure.
    assert any(not signed(s["domain"]) and all(signed(mx["name"]) for mx in s["mx"]) for s in DANE)
    ips = [mx["ip"] for _, mx in Bed(workdir="/nonexistent").mx_hosts()]
    assert len(ips) == len(set(ips)), "two MX hosts share an address"


# --- DNSSEC ------------------------------------------------------------------

def test_secure_answers_carry_ad_and_insecure_ones_do_not(bed):
    for s, mx in HOSTS:
        rcode, ad, answers = ask(bed, s["domain"], "MX")
        assert rcode == "NOERROR" and answers == [f"10 {mx['name']}."], s["name"]
        assert ad == signed(s["domain"]), (s["name"], "MX", ad)
        rcode, ad, answers = ask(bed, mx["name"], "A")
        assert (rcode, answers) == ("NOERROR", [mx["ip"]]) and ad == signed(mx["name"]), (mx["name"], ad)
        if mx.get("tlsa_bogus"):
            continue
        rcode, ad, answers = ask(bed, f"_25._tcp.{mx['name']}", "TLSA")
        assert rcode == "NOERROR" and sorted(answers) == sorted(bed.tlsa_records(mx["name"])), mx["name"]
        assert ad == signed(mx["name"]), (mx["name"], "TLSA", ad)
    # The rest of .test is as before: answered, never with AD.
    for name, rdtype in (("valid.test", "MX"), ("mx.valid.test", "A"), ("_mta-sts.sts-enforce.test", "TXT")):
        rcode, ad, answers = ask(bed, name, rdtype)
        assert rcode == "NOERROR" and answers and not ad, (name, rdtype)
    # The signed zone's denials are secure too (a client asks AAAA first or
    # after A; NXDOMAIN below an MX host).
    host = next(mx["name"] for _, mx in HOSTS if signed(mx["name"]))
    assert ask(bed, host, "AAAA")[:3] == ("NOERROR", True, [])
    assert ask(bed, f"nothing-here.{DNSSEC_ZONE}", "A")[:3] == ("NXDOMAIN", True, [])
    # And with DO, the RRSIGs come along.
    r = bed.dns_query(host, "A", ad=False, dnssec=True)
    assert r.flags & dns.flags.AD and any(rrset.rdtype == 46 for rrset in r.answer)


def test_ad_needs_ad_or_do_in_the_query(bed):
    """RFC 6840 §5.7, as unbound does it: a query without AD or DO gets no
    AD, even for a secure name (relayd must set AD or DO)."""
    host = next(mx["name"] for _, mx in HOSTS if signed(mx["name"]))
    assert ask(bed, host, "A", ad=False)[:2] == ("NOERROR", False)
    assert ask(bed, host, "A", ad=True)[:2] == ("NOERROR", True)
    assert ask(bed, host, "A", ad=False, dnssec=True)[:2] == ("NOERROR", True)


def test_the_bogus_tlsa_rrset_is_servfail_and_only_cd_returns_it(bed):
    bogus = [mx for _, mx in HOSTS if mx.get("tlsa_bogus")]
    assert bogus
    for mx in bogus:
        name = f"_25._tcp.{mx['name']}"
        assert ask(bed, name, "TLSA")[:3] == ("SERVFAIL", False, [])
        # The host's other records validate: only the TLSA RRset is bogus.
        assert ask(bed, mx["name"], "A")[:3] == ("NOERROR", True, [mx["ip"]])
        rcode, ad, served = ask(bed, name, "TLSA", cd=True)
        assert rcode == "NOERROR" and not ad and len(served) == len(bed.tlsa_records(mx["name"]))
        assert served != bed.tlsa_records(mx["name"]), "the served data is the spoiled one"
        # Straight from the authoritative server, with its RRSIG.
        r = bed.dns_query(name, "TLSA", ad=False, dnssec=True, server=AUTH_DNS_IP)
        assert r.flags & dns.flags.AA and any(rrset.rdtype == 46 for rrset in r.answer)


def test_the_signed_zone_is_anchored_by_its_ds(bed):
    rcode, ad, keys = ask(bed, DNSSEC_ZONE, "DNSKEY")
    assert rcode == "NOERROR" and ad and len(keys) == 2
    assert re.fullmatch(rf"{re.escape(DNSSEC_ZONE)}\.\s+\d+\s+IN\s+DS\s+\d+ 13 2 [0-9a-f]{{64}}", bed.dnssec_ds)
    assert bed.signed_zone.exists() and "RRSIG\tTLSA 13 " in bed.signed_zone.read_text()


# --- what the receivers present -----------------------------------------------

def presented_chain(ip, name):
    """The certificates (DER, leaf first) the MX at `ip` presents after
    STARTTLS, as openssl s_client -showcerts prints them."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"{ip}:25", "-starttls", "smtp", "-servername", name,
                        "-showcerts"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
    pems = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", r.stdout, re.S)
    assert pems, f"no certificate from {ip}: {r.stdout[-500:]}{r.stderr[-500:]}"
    return [ssl.PEM_cert_to_DER_cert(p) for p in pems]


def spki(der):
    pem = ssl.DER_cert_to_PEM_cert(der)
    out = subprocess.run(["openssl", "x509", "-noout", "-pubkey"], input=pem, capture_output=True, text=True,
                         check=True, timeout=10).stdout
    body = re.search(r"-----BEGIN PUBLIC KEY-----(.*?)-----END PUBLIC KEY-----", out, re.S).group(1)
    return base64.b64decode("".join(body.split()))


def association(der, selector, mtype):
    data = der if selector == 0 else spki(der)
    return {0: data.hex(), 2: hashlib.sha512(data).hexdigest()}.get(mtype, hashlib.sha256(data).hexdigest())


def matches(record, der):
    usage, selector, mtype, hexdata = record.split()
    return association(der, int(selector), int(mtype)) == hexdata.lower()


def openssl_x509(der, *args):
    return subprocess.run(["openssl", "x509", "-noout", *args], input=ssl.DER_cert_to_PEM_cert(der),
                          capture_output=True, text=True, timeout=10)


def names_in(der):
    return re.findall(r"DNS:([^,\s]+)", openssl_x509(der, "-ext", "subjectAltName").stdout)


def pkix_ok(der, cafile, name, chain=()):
    """openssl verify of the leaf against `cafile` for host `name`."""
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as leaf, tempfile.NamedTemporaryFile("w", suffix=".pem") as untrusted:
        leaf.write(ssl.DER_cert_to_PEM_cert(der))
        leaf.flush()
        untrusted.write("".join(ssl.DER_cert_to_PEM_cert(c) for c in chain))
        untrusted.flush()
        argv = ["openssl", "verify", "-CAfile", str(cafile), "-verify_hostname", name]
        if chain:
            argv += ["-untrusted", untrusted.name]
        return subprocess.run([*argv, leaf.name], capture_output=True, text=True, timeout=10).returncode == 0


@pytest.mark.parametrize("row", [s["name"] for s, mx in HOSTS if mx["receiver"] == "tls"])
def test_tlsa_records_match_what_the_receiver_presents_as_designed(bed, row):
    s = next(s for s in DANE if s["name"] == row)
    mx = s["mx"][0]
    chain = presented_chain(mx["ip"], mx["name"])
    leaf = chain[0]
    specs = mx["tlsa"]
    published = bed.tlsa_records(mx["name"])
    assert len(published) == len(specs)
    for spec, record in zip(specs, published):
        what = spec.split()[3]
        assert record.split()[:3] == spec.split()[:3]
        hits = [i for i, der in enumerate(chain) if matches(record, der)]
        if what == "none":
            assert hits == [], (row, spec)
        elif what == "leaf":
            assert hits[:1] == [0], (row, spec)
        elif what == "ta":
            ta = ssl.PEM_cert_to_DER_cert(bed.trust_anchor_of(mx["name"]).read_text())
            assert matches(record, ta), (row, spec)
            assert hits == ([1] if mx.get("send_ca") else []), (row, spec, "the TA is sent only with send_ca")
    assert len(chain) == (2 if mx.get("send_ca") else 1), row
    if mx.get("tlsa_bogus"):
        served = ask(bed, f"_25._tcp.{mx['name']}", "TLSA", cd=True)[2]
        assert not any(matches(r, der) for r in served for der in chain), "the spoiled record matches nothing"

    name_ok = mx["name"] in names_in(leaf)
    assert name_ok == (mx.get("cert_name") is None and mx.get("cert") != "wrongname"), (row, names_in(leaf))
    expired = openssl_x509(leaf, "-checkend", "0").returncode != 0
    assert expired == (mx.get("cert") == "expired"), row
    # Whom the leaf chains to: the DANE TA CA (which PKIX with the bed's CA
    # does not accept) or the bed's CA.
    if mx.get("issuer") == "dane-ta":
        assert pkix_ok(leaf, bed.dane_ca.cert, mx["name"]) == name_ok, row
        assert not pkix_ok(leaf, bed.ca.cert, mx["name"]), row
    elif mx.get("cert", "valid") == "valid":
        assert pkix_ok(leaf, bed.ca.cert, mx["name"]) == name_ok, row


def test_unusable_rows_hold_only_records_a_dane_client_drops(bed):
    for s, mx in HOSTS:
        if s["dane_expect"] != "tls" or not signed(mx["name"]):
            continue
        for record in bed.tlsa_records(mx["name"]):
            usage, selector, mtype, _ = map(str, record.split())
            assert usage in ("0", "1") or selector not in ("0", "1") or mtype not in ("0", "1", "2"), record


def test_the_expired_leaf_is_expired_and_was_once_valid(bed):
    mx = next(mx for _, mx in HOSTS if mx.get("cert") == "expired")
    leaf = presented_chain(mx["ip"], mx["name"])[0]
    dates = openssl_x509(leaf, "-dates").stdout
    assert openssl_x509(leaf, "-checkend", "0").returncode == 1, dates
    assert mx["name"] in names_in(leaf)
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as f:
        f.write(ssl.DER_cert_to_PEM_cert(leaf))
        f.flush()
        r = subprocess.run(["openssl", "verify", "-CAfile", str(bed.ca.cert), f.name], capture_output=True, text=True)
    assert "certificate has expired" in r.stdout + r.stderr, r


def test_the_strip_proxy_hides_starttls_of_a_matching_dane_host(bed):
    s = next(s for s in DANE if s["mx"][0]["receiver"] == "strip")
    mx = s["mx"][0]
    with smtplib.SMTP(mx["ip"], 25, timeout=10) as c:
        c.ehlo("check.test")
        assert not c.has_extn("starttls")
    backend = bed.mx_at(mx["upstream"])
    leaf = presented_chain(backend["ip"], mx["name"])[0]
    assert all(matches(r, leaf) for r in bed.tlsa_records(mx["name"])), "the MX behind the proxy matches"


def test_the_dane_and_sts_row_publishes_a_valid_enforce_policy(bed):
    s = next(s for s in DANE if s.get("sts"))
    d = s["domain"]
    assert ask(bed, f"_mta-sts.{d}", "TXT")[:3] == ("NOERROR", signed(d), [f'"v=STSv1; id={s["sts"]["id"]};"'])
    assert bed.policy_host_state(d) == ("200", "text/plain", bed.sts_policy_text(d))
    with pytest.raises(ValueError):
        bed.set_sts(d, id="changed")


# --- the query log ------------------------------------------------------------

def test_the_query_log_records_what_clients_asked(bed):
    mark = len(bed.dns_queries())
    probe = f"probe-{uuid.uuid4().hex[:8]}.{DNSSEC_ZONE}"
    insecure = next(mx["name"] for _, mx in HOSTS if not signed(mx["name"]))
    ask(bed, probe, "TLSA")
    ask(bed, insecure, "A")
    ask(bed, "valid.test", "MX")
    asked = bed.dns_queries(since=mark)
    assert asked == [(probe, "TLSA"), (insecure, "A"), ("valid.test", "MX")], asked
    assert (f"_25._tcp.{insecure}", "TLSA") not in asked
    assert bed.dns_queries()[mark:] == asked
