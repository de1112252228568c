//! One test per threat named in the module doc, plus the code format.

use super::*;

const EXPORTER: [u8; 32] = [7; 32];

/// The client's verdict on the server, and the server's verdict on the client.
type Verdicts = (Result<(), PairError>, Result<(), PairError>);

/// Runs a whole exchange; the client uses `client_code` and `client_exporter`, the server `code`
/// and `server_exporter`. Returns (client's verdict on the server, server's verdict on the client).
fn exchange(
    client_code: &PairCode,
    client_exporter: &[u8; 32],
    code: &PairCode,
    server_exporter: &[u8; 32],
) -> Result<Verdicts, PairError> {
    let (client, msg_a) = ClientPairing::start(client_code, client_exporter);
    let (server, msg_b, server_mac) = ServerPairing::respond(code, server_exporter, &msg_a)?;
    match client.finish(&msg_b, &server_mac) {
        Ok(client_mac) => Ok((Ok(()), server.verify(&client_mac))),
        Err(e) => {
            // A client that stops here sends nothing; a cheating client could send anything.
            Ok((Err(e), server.verify(&[0u8; CONFIRM_LEN])))
        }
    }
}

fn code(s: &str) -> PairCode {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn the_right_code_works_on_both_sides() -> Result<(), PairError> {
    let c = code("7-copper-lantern");
    assert_eq!(exchange(&c, &EXPORTER, &c, &EXPORTER)?, (Ok(()), Ok(())));
    Ok(())
}

#[test]
fn a_wrong_code_fails_on_both_sides() -> Result<(), PairError> {
    let server = code("7-copper-lantern");
    for wrong in ["7-copper-lemon", "7-lantern-copper", "8-copper-lantern"] {
        let (client, srv) = exchange(&code(wrong), &EXPORTER, &server, &EXPORTER)?;
        assert_eq!(client, Err(PairError::Mismatch), "{wrong}");
        assert_eq!(srv, Err(PairError::Mismatch), "{wrong}");
    }
    Ok(())
}

#[test]
fn a_relay_between_two_tls_sessions_fails_on_both_sides() -> Result<(), PairError> {
    let c = code("7-copper-lantern");
    let mut other = EXPORTER;
    other[31] ^= 1;
    assert_eq!(
        exchange(&c, &EXPORTER, &c, &other)?,
        (Err(PairError::Mismatch), Err(PairError::Mismatch))
    );
    Ok(())
}

#[test]
fn a_client_mac_replayed_from_another_session_is_refused() -> Result<(), PairError> {
    let c = code("7-copper-lantern");
    let (client, msg_a) = ClientPairing::start(&c, &EXPORTER);
    let (server, msg_b, mac) = ServerPairing::respond(&c, &EXPORTER, &msg_a)?;
    let good_mac = client.finish(&msg_b, &mac)?;
    // A second session with the same code: the first session's MAC is useless there.
    let (_, msg_a2) = ClientPairing::start(&c, &EXPORTER);
    let (server2, _, _) = ServerPairing::respond(&c, &EXPORTER, &msg_a2)?;
    assert_eq!(server2.verify(&good_mac), Err(PairError::Mismatch));
    assert_eq!(server.verify(&good_mac), Ok(()));
    Ok(())
}

#[test]
fn malformed_messages_are_refused() -> Result<(), PairError> {
    let c = code("7-copper-lantern");
    for bad in [&[][..], &[0u8; MESSAGE_LEN - 1], &[0u8; MESSAGE_LEN + 1]] {
        assert_eq!(
            ServerPairing::respond(&c, &EXPORTER, bad).err(),
            Some(PairError::BadMessage)
        );
    }
    let (client, msg_a) = ClientPairing::start(&c, &EXPORTER);
    // The client's own message reflected back (wrong side byte) is not a server message.
    assert_eq!(
        client.finish(&msg_a, &[0u8; CONFIRM_LEN]),
        Err(PairError::BadMessage)
    );
    let (client, _) = ClientPairing::start(&c, &EXPORTER);
    assert_eq!(
        client.finish(&[0u8; MESSAGE_LEN], &[0u8; 5]),
        Err(PairError::BadMessage)
    );
    Ok(())
}

#[test]
fn the_code_is_burnt_after_max_tries() -> Result<(), PairError> {
    let codes = PairingCodes::<&str>::default();
    let now = Instant::now();
    let issued = codes.issue("drop-box", DEFAULT_LIFETIME, now)?;
    let mut wrong = issued.clone();
    wrong.words[0] = wrong.words[0].wrapping_add(1);
    for _ in 0..MAX_TRIES {
        let attempt = codes.attempt(issued.nameplate(), now)?;
        let (_, srv) = exchange(&wrong, &EXPORTER, &attempt.code, &EXPORTER)?;
        assert_eq!(srv, Err(PairError::Mismatch));
    }
    // Even the right code is now refused: the code is gone.
    assert_eq!(
        codes.attempt(issued.nameplate(), now).err(),
        Some(PairError::UnknownCode)
    );
    Ok(())
}

#[test]
fn a_code_grants_once_and_expires() -> Result<(), PairError> {
    let codes = PairingCodes::<u32>::default();
    let now = Instant::now();
    let issued = codes.issue(42, DEFAULT_LIFETIME, now)?;
    let first = codes.attempt(issued.nameplate(), now)?;
    let second = codes.attempt(issued.nameplate(), now)?;
    assert_eq!(
        exchange(&issued, &EXPORTER, &first.code, &EXPORTER)?,
        (Ok(()), Ok(()))
    );
    assert_eq!(first.complete(), Ok(42));
    assert_eq!(second.complete(), Err(PairError::CodeUsed));
    assert_eq!(
        codes.attempt(issued.nameplate(), now).err(),
        Some(PairError::UnknownCode)
    );

    let later = codes.issue(7, Duration::from_secs(60), now)?;
    let expired = now + Duration::from_secs(61);
    assert_eq!(
        codes.attempt(later.nameplate(), expired).err(),
        Some(PairError::UnknownCode)
    );
    assert_eq!(codes.attempt(0, now).err(), Some(PairError::UnknownCode));
    Ok(())
}

#[test]
fn codes_are_bounded_and_distinct() -> Result<(), PairError> {
    let codes = PairingCodes::<()>::default();
    let now = Instant::now();
    let mut numbers = std::collections::HashSet::new();
    for _ in 0..MAX_ACTIVE_CODES {
        assert!(numbers.insert(codes.issue((), DEFAULT_LIFETIME, now)?.nameplate()));
    }
    assert_eq!(
        codes.issue((), DEFAULT_LIFETIME, now).err(),
        Some(PairError::Full)
    );
    let any = *numbers.iter().next().ok_or(PairError::Full)?;
    assert!(codes.cancel(any));
    assert!(codes.issue((), DEFAULT_LIFETIME, now).is_ok());
    Ok(())
}

#[test]
fn wire_encoding_checks_lengths() -> Result<(), PairError> {
    let (_, msg_a) = ClientPairing::start(&code("7-copper-lantern"), &EXPORTER);
    let text = encode_b64(&msg_a);
    assert_eq!(text.len(), 44);
    assert_eq!(decode_b64(&text, MESSAGE_LEN)?, msg_a);
    let mac = [9u8; CONFIRM_LEN];
    let text = encode_b64(&mac);
    assert_eq!(text.len(), 43);
    assert_eq!(decode_b64(&text, CONFIRM_LEN)?, mac);
    assert_eq!(decode_b64(&format!("{text}="), CONFIRM_LEN)?, mac);
    for bad in ["", "!!!!", &text[1..], &format!("{text}AAAA")] {
        assert_eq!(
            decode_b64(bad, CONFIRM_LEN).err(),
            Some(PairError::BadMessage),
            "{bad:?}"
        );
    }
    assert_eq!(
        decode_b64(&"A".repeat(10_000), CONFIRM_LEN).err(),
        Some(PairError::BadMessage)
    );
    Ok(())
}

#[test]
fn code_text_round_trips_and_bad_forms_are_refused() -> Result<(), PairError> {
    assert_eq!(WORDS.len(), 256);
    let mut sorted = WORDS.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 256, "words are distinct");
    assert!(
        WORDS
            .iter()
            .all(|w| w.bytes().all(|b| b.is_ascii_lowercase()) && w.len() <= 8)
    );
    for _ in 0..50 {
        let c = PairCode::generate(|_| false)?;
        assert_eq!(c.to_string().parse::<PairCode>()?, c);
        assert!(!format!("{c:?}").contains(WORDS[usize::from(c.words[0])]));
    }
    assert_eq!(code(" 07 Copper-LANTERN ").to_string(), "7-copper-lantern");
    for bad in [
        "",
        "7",
        "7-copper",
        "7-copper-lantern-x",
        "0-copper-lantern",
        "100-copper-lantern",
        "x-copper-lantern",
        "7-copper-notaword",
        "+7-copper-lantern",
        "7--",
    ] {
        assert_eq!(
            bad.parse::<PairCode>().err(),
            Some(PairError::InvalidCode),
            "{bad:?}"
        );
    }
    assert_eq!(PairCode::generate(|_| true).err(), Some(PairError::Full));
    Ok(())
}

/// Handshakes over an in-memory pipe and returns (client exporter, server exporter, key the
/// client saw).
async fn tls_session(
    server: &crate::security::identity::Identity,
) -> Result<
    (
        [u8; 32],
        [u8; 32],
        Option<crate::security::identity::Fingerprint>,
    ),
    Box<dyn std::error::Error>,
> {
    use crate::security::tls;
    let (client_io, server_io) = tokio::io::duplex(16 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(server)?);
    let server_side = tokio::spawn(async move { acceptor.accept(server_io).await });
    let (config, presented) = tls::client_config(tls::Expectation::FirstContact)?;
    let client = tls::connect(config, client_io).await?;
    let server = server_side.await??;
    let c = tls::exporter(client.get_ref().1, tls::PAIR_EXPORTER_LABEL)?;
    let s = tls::exporter(server.get_ref().1, tls::PAIR_EXPORTER_LABEL)?;
    Ok((c, s, presented.get()))
}

#[tokio::test]
async fn pairing_over_tls_pins_the_server_and_a_relay_is_caught()
-> Result<(), Box<dyn std::error::Error>> {
    let server = crate::security::identity::Identity::generate()?;
    let c = code("12-otter-violin");

    // Direct: the exporter values agree, both sides confirm, the client pins what it saw.
    let (client_exp, server_exp, seen) = tls_session(&server).await?;
    assert_eq!(
        exchange(&c, &client_exp, &c, &server_exp)?,
        (Ok(()), Ok(()))
    );
    assert_eq!(seen, Some(server.fingerprint()));

    // Relayed: the client's TLS session ends at the relay, which opens its own to the server and
    // passes the pairing messages through unchanged. Both confirmations fail.
    let relay = crate::security::identity::Identity::generate()?;
    let (client_exp, _, seen_by_client) = tls_session(&relay).await?;
    let (_, server_exp, _) = tls_session(&server).await?;
    assert_eq!(seen_by_client, Some(relay.fingerprint()));
    assert_eq!(
        exchange(&c, &client_exp, &c, &server_exp)?,
        (Err(PairError::Mismatch), Err(PairError::Mismatch))
    );
    Ok(())
}

/// A source of one repeated byte, so that SPAKE2's random scalars are known (a test vector).
struct Fixed(u8);

impl rand_core::RngCore for Fixed {
    fn next_u32(&mut self) -> u32 {
        u32::from_le_bytes([self.0; 4])
    }
    fn next_u64(&mut self) -> u64 {
        u64::from_le_bytes([self.0; 8])
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        dest.fill(self.0);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        dest.fill(self.0);
        Ok(())
    }
}

impl rand_core::CryptoRng for Fixed {}

/// The example exchange of PROTOCOL.md section 5.10, whose values were computed from that
/// section's text alone (a pure-Python SPAKE2 over edwards25519): a client written from the
/// spec gets exactly what this implementation gets.
#[test]
fn the_exchange_is_the_one_protocol_md_writes_out() -> Result<(), PairError> {
    let code = code("7-copper-lantern");
    let exporter: [u8; 32] = std::array::from_fn(|i| u8::try_from(i).unwrap_or(0));
    let (id_a, id_b) = identities(&exporter);
    let pw = code.password();
    let (client, msg_a) = Spake2::<Ed25519Group>::start_a_with_rng(&pw, &id_a, &id_b, Fixed(7));
    let (server, msg_b) = Spake2::<Ed25519Group>::start_b_with_rng(&pw, &id_a, &id_b, Fixed(9));
    assert_eq!(
        hex::encode(&msg_a),
        "418fb6838e2b98b1eb7de850f155919afdb44d88585ebb808867785f56f11b44d9"
    );
    assert_eq!(
        hex::encode(&msg_b),
        "422ea2a6d25931defa0759ceb6eb7e98967ba7fe2f077ee5f5e1c1fd8f3b131038"
    );
    let key = client.finish(&msg_b).map_err(|_| PairError::BadMessage)?;
    assert_eq!(
        server.finish(&msg_a).map_err(|_| PairError::BadMessage)?,
        key
    );
    assert_eq!(
        hex::encode(&key),
        "20cdac4b1dd009301f9f6c5de3159ed3cc00e9da2532307cc0cbb2c4069efd81"
    );
    let (mc, ms) = confirmations(&key, &exporter, &msg_a, &msg_b)?;
    assert_eq!(
        hex::encode(ms.finalize().into_bytes()),
        "4db280579e8a18db9d1240caa85f0c0d292f1c88a301ac4697c283fbcaa9976f"
    );
    assert_eq!(
        hex::encode(mc.finalize().into_bytes()),
        "b26fd9f159f1f96e0fe5443972985f69683f4f74509dd2da586e245e6f447009"
    );
    Ok(())
}
