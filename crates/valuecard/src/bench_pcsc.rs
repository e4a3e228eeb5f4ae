//! `valuecard bench pcsc`: command/response round trips per second through the real PC/SC
//! stack (pcscd with vsmartcard's virtual reader driver vpcd), for three cards in turn:
//!
//! 1. a valuecard card image served by `valuecard card attach` (this program, in a child
//!    process) in vpcd's reader slot 0;
//! 2. vsmartcard's own Python emulator `vicc` (Debian `vsmartcard-vpicc`), an ISO 7816 card,
//!    in slot 1;
//! 3. the stack's floor: a card in this process that answers every command APDU with `9000`
//!    at once, in slot 0 after the others have left. It runs twice: with its socket as the
//!    bridge's (and vicc's) and, on Linux, acknowledging every segment at once
//!    (`TCP_QUICKACK`). vpcd sends each frame's length and payload in two segments without
//!    `TCP_NODELAY`, so a card that leaves acknowledgements to the kernel's delayed ACK
//!    receives every command about 40 ms late; the second floor shows what the stack does
//!    without that wait.
//!
//! The client is valuecard-reader's `PcscReader`, one connection per card, one APDU at a
//! time. Needs the `pcsc` feature; pcscd with vpcd running (`scripts/start-pcscd.sh`) and
//! both vpcd readers empty.

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct PcscArgs {
    /// Seconds of round trips per card.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[cfg(not(feature = "pcsc"))]
pub fn run(args: PcscArgs) -> Result<ExitCode, String> {
    let _ = (args.seconds, args.json);
    Err(
        "bench pcsc measures round trips through pcscd, but this valuecard was built without \
         PC/SC support: rebuild with `--features pcsc` (needs libpcsclite; Debian: \
         libpcsclite-dev)"
            .to_owned(),
    )
}

#[cfg(feature = "pcsc")]
pub fn run(args: PcscArgs) -> Result<ExitCode, String> {
    imp::run(&args)
}

#[cfg(feature = "pcsc")]
mod imp {
    use std::fs::File;
    use std::io::{self, Read, Write};
    use std::net::TcpStream;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, ExitCode, Stdio};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::thread::{self, JoinHandle};
    use std::time::{Duration, Instant};

    use rand_core::OsRng;
    use serde_json::json;
    use valuecard_card::FileCard;
    use valuecard_core::crypto::AesKey;
    use valuecard_reader::pcsc_reader::PcscReader;
    use valuecard_reader::vpcd::{self, ctrl, encode_frame, ATR};
    use valuecard_reader::{CardReader, ReaderError};

    use super::PcscArgs;

    /// SELECT of the valuecard purse by its AID (docs/card-commands.md § 6.1). The floor
    /// answers it too (with `9000`, as it answers everything).
    const SELECT_PURSE: [u8; 14] = [
        0x00, 0xA4, 0x04, 0x00, 0x08, 0xF0, 0x56, 0x43, 0x50, 0x55, 0x52, 0x53, 0x45, 0x00,
    ];
    /// SELECT of the master file 3F00 without a response (P2 = 0C): vicc's ISO 7816 card
    /// answers `9000` with no data.
    const SELECT_MF: [u8; 7] = [0x00, 0xA4, 0x00, 0x0C, 0x02, 0x3F, 0x00];
    /// Part of the name pcsc-lite gives vpcd's readers ("Virtual PCD 00 00", ...).
    const VPCD_READER: &str = "Virtual PCD";
    /// How long a card may take to show up in its reader (pcscd polls every 400 ms or so).
    const CARD_WAIT: Duration = Duration::from_secs(30);
    /// How long a reader stays empty before the next card goes in, so that pcscd's status
    /// thread (polling vpcd every 400 ms or so) sees the old card leave and announces the new
    /// one.
    const SLOT_SETTLE: Duration = Duration::from_millis(1200);
    /// Where Debian bookworm's python3-virtualsmartcard puts the module vicc imports: a
    /// directory that is not on Python's path.
    const DEBIAN_VICC_MODULES: &str = "/usr/lib/python3/site-packages/virtualsmartcard";
    /// Python 2's `sha` module, which vicc imports when PyCrypto is missing (Debian ships
    /// PyCryptodome under another name). Only the import is needed for an ISO 7816 card.
    const SHA_SHIM: &str = "# Python 2's sha module, for vicc without PyCrypto.\n\
                            from hashlib import sha1 as new\n\
                            digest_size = 20\n";

    /// The floor card's historical bytes.
    const FLOOR_HISTORICAL: &[u8; 5] = b"floor";
    /// The floor's ATR: like valuecard's (T=1 only), with its own historical bytes.
    const FLOOR_ATR: [u8; 9] = valuecard_reader::vpcd::t1_atr(FLOOR_HISTORICAL);

    /// One card's run.
    struct Measurement {
        key: &'static str,
        label: &'static str,
        reader: String,
        command: Vec<u8>,
        round_trips: u64,
        elapsed: Duration,
        latencies: Vec<Duration>,
    }

    impl Measurement {
        fn per_second(&self) -> f64 {
            self.round_trips as f64 / self.elapsed.as_secs_f64()
        }

        fn mean(&self) -> Duration {
            self.elapsed / u32::try_from(self.round_trips.max(1)).unwrap_or(u32::MAX)
        }

        fn quantile(&self, q: f64) -> Duration {
            let mut sorted = self.latencies.clone();
            sorted.sort();
            let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
            sorted.get(index).copied().unwrap_or_default()
        }

        fn to_json(&self) -> serde_json::Value {
            json!({
                "card": self.label,
                "reader": self.reader,
                "command": hex::encode_upper(&self.command),
                "round_trips": self.round_trips,
                "seconds": self.elapsed.as_secs_f64(),
                "round_trips_per_second": self.per_second(),
                "mean_ms": ms(self.mean()),
                "median_ms": ms(self.quantile(0.5)),
                "p99_ms": ms(self.quantile(0.99)),
            })
        }
    }

    fn ms(duration: Duration) -> f64 {
        duration.as_secs_f64() * 1e3
    }

    /// A child process (the attach bridge or vicc), killed and reaped however the bench
    /// ends.
    struct ChildGuard {
        child: Child,
        log: PathBuf,
        what: &'static str,
    }

    impl ChildGuard {
        fn spawn(mut command: Command, log: PathBuf, what: &'static str) -> Result<Self, String> {
            let stderr = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
            let child = command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .map_err(|e| format!("starting {what}: {e}"))?;
            Ok(ChildGuard { child, log, what })
        }

        /// An error message with the child's log, or its exit status if it ended.
        fn failure(&mut self, message: &str) -> String {
            let ended = match self.child.try_wait() {
                Ok(Some(status)) => format!(" ({} exited: {status})", self.what),
                _ => String::new(),
            };
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("{message}{ended}; its log:\n{}", tail.join("\n"))
        }

        fn stop(mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Drop for ChildGuard {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The floor card: a thread that speaks vpcd's framing and answers every command APDU
    /// with `9000` at once.
    struct FloorCard {
        stop: Arc<AtomicBool>,
        handle: Option<JoinHandle<Result<u64, String>>>,
    }

    impl FloorCard {
        fn start(addr: String, quick_ack: bool) -> Result<Self, String> {
            let stream = TcpStream::connect(&addr)
                .map_err(|e| format!("floor card: connecting to vpcd at {addr}: {e}"))?;
            stream
                .set_nodelay(true)
                .and_then(|()| stream.set_read_timeout(Some(Duration::from_millis(100))))
                .map_err(|e| format!("floor card: {e}"))?;
            let stop = Arc::new(AtomicBool::new(false));
            let thread_stop = Arc::clone(&stop);
            let handle = thread::Builder::new()
                .name("floor card".to_owned())
                .spawn(move || serve_floor(stream, &thread_stop, quick_ack))
                .map_err(|e| format!("floor card: {e}"))?;
            Ok(FloorCard {
                stop,
                handle: Some(handle),
            })
        }

        /// Stops the card (it leaves the reader); returns how many APDUs it answered.
        fn stop(mut self) -> Result<u64, String> {
            self.stop.store(true, Ordering::SeqCst);
            match self.handle.take().map(JoinHandle::join) {
                Some(Ok(result)) => result,
                Some(Err(_)) => Err("floor card: its thread panicked".to_owned()),
                None => Ok(0),
            }
        }
    }

    impl Drop for FloorCard {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            if let Some(handle) = self.handle.take() {
                let _ = handle.join();
            }
        }
    }

    #[cfg(target_os = "linux")]
    fn ack_at_once(stream: &TcpStream) -> io::Result<()> {
        // Linux leaves quick-ACK mode again on its own: set before every read.
        socket2::SockRef::from(stream).set_tcp_quickack(true)
    }

    #[cfg(not(target_os = "linux"))]
    fn ack_at_once(_stream: &TcpStream) -> io::Result<()> {
        Ok(())
    }

    /// Fills `buf`; `Ok(false)` when stopped or when vpcd closed the connection.
    fn read_full(
        stream: &mut TcpStream,
        buf: &mut [u8],
        stop: &AtomicBool,
        quick_ack: bool,
    ) -> Result<bool, String> {
        let mut filled = 0;
        while filled < buf.len() {
            if stop.load(Ordering::SeqCst) {
                return Ok(false);
            }
            if quick_ack {
                ack_at_once(stream).map_err(|e| format!("floor card: TCP_QUICKACK: {e}"))?;
            }
            match stream.read(&mut buf[filled..]) {
                Ok(0) => return Ok(false),
                Ok(n) => filled += n,
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(error) => return Err(format!("floor card: reading from vpcd: {error}")),
            }
        }
        Ok(true)
    }

    fn serve_floor(
        mut stream: TcpStream,
        stop: &AtomicBool,
        quick_ack: bool,
    ) -> Result<u64, String> {
        const ANSWER: [u8; 4] = [0x00, 0x02, 0x90, 0x00];
        let atr_frame = encode_frame(&FLOOR_ATR).unwrap_or_default();
        let mut answered = 0u64;
        let mut payload = Vec::new();
        loop {
            let mut header = [0u8; 2];
            if !read_full(&mut stream, &mut header, stop, quick_ack)? {
                break;
            }
            payload.resize(usize::from(u16::from_be_bytes(header)), 0);
            if !read_full(&mut stream, &mut payload, stop, quick_ack)? {
                break;
            }
            let reply: &[u8] = match payload.as_slice() {
                [ctrl::GET_ATR] => &atr_frame,
                // Power and reset messages get no answer, nor does an empty frame.
                [] | [_] => continue,
                _ => {
                    answered += 1;
                    &ANSWER
                }
            };
            stream
                .write_all(reply)
                .map_err(|e| format!("floor card: writing to vpcd: {e}"))?;
        }
        let _ = stream.shutdown(std::net::Shutdown::Both);
        Ok(answered)
    }

    /// The name of vpcd's reader for `slot`: the slot-th reader whose name says vpcd.
    fn reader_for_slot(slot: usize) -> Result<String, String> {
        let names = PcscReader::list().map_err(|e| format!("PC/SC: {e}"))?;
        names
            .iter()
            .filter(|name| name.contains(VPCD_READER))
            .nth(slot)
            .cloned()
            .ok_or_else(|| {
                format!(
                    "no {VPCD_READER} reader for vpcd slot {slot} (readers: {names:?}); start \
                     pcscd with vsmartcard's vpcd: bash scripts/start-pcscd.sh"
                )
            })
    }

    /// Waits until pcscd reports `reader` empty (a card that just left may still be listed
    /// until pcscd's next poll), then lets it settle.
    fn wait_until_empty(reader: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            match PcscReader::open(Some(reader), Duration::ZERO) {
                Err(ReaderError::NoCard) => {
                    thread::sleep(SLOT_SETTLE);
                    return Ok(());
                }
                Err(error) => return Err(format!("PC/SC: {error}")),
                Ok(card) => {
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "{reader} holds a card (ATR {}): stop whatever serves it (another \
                             `valuecard card attach`, vicc, a test) before benchmarking",
                            hex::encode_upper(card.atr())
                        ));
                    }
                }
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Connects to the card in `reader` once its ATR is the expected one (`None`: any).
    fn connect(reader: &str, atr: Option<&[u8]>) -> Result<PcscReader, ReaderError> {
        let deadline = Instant::now() + CARD_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let card = PcscReader::open(Some(reader), left)?;
            if atr.is_none_or(|atr| card.atr() == atr) {
                return Ok(card);
            }
            if Instant::now() >= deadline {
                return Err(ReaderError::Transport(format!(
                    "{reader}: the card's ATR {} is not the expected one",
                    hex::encode_upper(card.atr())
                )));
            }
            drop(card);
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Round trips of `command` for `seconds`, after a short warm-up; every answer must end
    /// in `9000`.
    fn measure(
        card: &mut PcscReader,
        command: &[u8],
        seconds: f64,
    ) -> Result<(u64, Duration, Vec<Duration>), String> {
        let name = card.reader_name().to_owned();
        let check = |response: &[u8]| {
            if response.ends_with(&[0x90, 0x00]) {
                Ok(())
            } else {
                Err(format!(
                    "{name}: {} answered {}, not 9000",
                    hex::encode_upper(command),
                    hex::encode_upper(response)
                ))
            }
        };
        for _ in 0..3 {
            let response = card
                .transmit_raw(command)
                .map_err(|e| format!("{name}: {e}"))?;
            check(&response)?;
        }
        let budget = Duration::from_secs_f64(seconds);
        let mut latencies = Vec::new();
        let start = Instant::now();
        while start.elapsed() < budget {
            let sent = Instant::now();
            let response = card
                .transmit_raw(command)
                .map_err(|e| format!("{name}: {e}"))?;
            latencies.push(sent.elapsed());
            check(&response)?;
        }
        Ok((latencies.len() as u64, start.elapsed(), latencies))
    }

    /// Connects, measures and disconnects; `stop` makes the card leave afterwards.
    fn run_card(
        key: &'static str,
        label: &'static str,
        reader: &str,
        atr: Option<&[u8]>,
        command: &[u8],
        seconds: f64,
    ) -> Result<Measurement, String> {
        let mut card = connect(reader, atr).map_err(|e| format!("{label}: {reader}: {e}"))?;
        let (round_trips, elapsed, latencies) = measure(&mut card, command, seconds)?;
        card.disconnect().map_err(|e| format!("{label}: {e}"))?;
        Ok(Measurement {
            key,
            label,
            reader: reader.to_owned(),
            command: command.to_vec(),
            round_trips,
            elapsed,
            latencies,
        })
    }

    fn find_in_path(program: &str) -> Option<PathBuf> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    }

    /// How to start vicc: its interpreter, its script, and a PYTHONPATH that makes Debian's
    /// package importable.
    struct Vicc {
        python: String,
        script: PathBuf,
        pythonpath: std::ffi::OsString,
    }

    fn find_vicc(shim_dir: &Path) -> Result<Vicc, String> {
        let script = find_in_path("vicc").ok_or(
            "vicc (vsmartcard's card emulator) not found: install Debian's vsmartcard-vpicc",
        )?;
        let mut interpreters = Vec::new();
        if let Some(first) = std::fs::read_to_string(&script)
            .ok()
            .and_then(|text| text.lines().next().map(str::to_owned))
        {
            if let Some(shebang) = first.strip_prefix("#!") {
                let words: Vec<&str> = shebang.split_whitespace().collect();
                match words.as_slice() {
                    [env, program, ..] if env.ends_with("/env") => {
                        interpreters.push((*program).to_owned());
                    }
                    [interpreter, ..] => interpreters.push((*interpreter).to_owned()),
                    [] => {}
                }
            }
        }
        interpreters.push("python3".to_owned());
        std::fs::write(shim_dir.join("sha.py"), SHA_SHIM)
            .map_err(|e| format!("{}: {e}", shim_dir.display()))?;
        let mut dirs = Vec::new();
        if Path::new(DEBIAN_VICC_MODULES).is_dir() {
            dirs.push(PathBuf::from(DEBIAN_VICC_MODULES));
        }
        if let Some(existing) = std::env::var_os("PYTHONPATH") {
            dirs.extend(std::env::split_paths(&existing));
        }
        // Last: the shim serves only an import nothing else satisfies.
        dirs.push(shim_dir.to_path_buf());
        let pythonpath = std::env::join_paths(dirs).map_err(|e| e.to_string())?;
        let mut failures = Vec::new();
        for python in interpreters {
            let probe = Command::new(&python)
                .args(["-c", "import virtualsmartcard.VirtualSmartcard"])
                .env("PYTHONPATH", &pythonpath)
                .stdin(Stdio::null())
                .output();
            match probe {
                Ok(output) if output.status.success() => {
                    return Ok(Vicc {
                        python,
                        script,
                        pythonpath,
                    })
                }
                Ok(output) => {
                    let stderr = String::from_utf8_lossy(&output.stderr);
                    failures.push(format!(
                        "{python}: {}",
                        stderr.lines().last().unwrap_or("failed")
                    ));
                }
                Err(error) => failures.push(format!("{python}: {error}")),
            }
        }
        Err(format!(
            "vicc cannot import its Python module virtualsmartcard ({}): install Debian's \
             vsmartcard-vpicc",
            failures.join("; ")
        ))
    }

    fn ratio(a: &Measurement, b: &Measurement) -> f64 {
        a.mean().as_secs_f64() / b.mean().as_secs_f64()
    }

    pub fn run(args: &PcscArgs) -> Result<ExitCode, String> {
        if !(args.seconds > 0.0 && args.seconds.is_finite()) {
            return Err(format!("--seconds {}: must be positive", args.seconds));
        }
        let seconds = args.seconds;
        let host = vpcd::DEFAULT_HOST;
        let port = |slot: u16| {
            vpcd::slot_port(slot)
                .map(|port| format!("{host}:{port}"))
                .ok_or_else(|| format!("no vpcd port for slot {slot}"))
        };
        let slot0 = reader_for_slot(0)?;
        let slot1 = reader_for_slot(1)?;
        for reader in [&slot0, &slot1] {
            // A card that has just been taken out may still be listed for a moment.
            wait_until_empty(reader, Duration::from_secs(5))?;
        }
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let vicc = find_vicc(dir.path())?;

        // 1. valuecard: a fresh card image behind `card attach` in slot 0.
        let image = dir.path().join("bench-card.img");
        FileCard::manufacture_file(&image, [0xC5; 8], AesKey::random(&mut OsRng))
            .map_err(|e| format!("{}: {e}", image.display()))?;
        let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
        let mut attach = Command::new(exe);
        attach
            .args(["card", "attach", "--slot", "0", "--card"])
            .arg(&image);
        let mut attach = ChildGuard::spawn(attach, dir.path().join("attach.log"), "card attach")?;
        let valuecard = match run_card(
            "valuecard",
            "valuecard (card attach)",
            &slot0,
            Some(&ATR),
            &SELECT_PURSE,
            seconds,
        ) {
            Ok(measurement) => measurement,
            Err(error) => return Err(attach.failure(&error)),
        };
        attach.stop();
        wait_until_empty(&slot0, CARD_WAIT)?;

        // 2. vicc in slot 1.
        let vicc_port = vpcd::slot_port(1).ok_or("no vpcd port for slot 1")?;
        let mut command = Command::new(&vicc.python);
        command
            .arg(&vicc.script)
            .args(["--type", "iso7816", "--hostname", host, "--port"])
            .arg(vicc_port.to_string())
            .env("PYTHONPATH", &vicc.pythonpath);
        let mut vicc_child = ChildGuard::spawn(command, dir.path().join("vicc.log"), "vicc")?;
        let vicc_run = match run_card(
            "vicc",
            "vicc iso7816 (vsmartcard)",
            &slot1,
            None,
            &SELECT_MF,
            seconds,
        ) {
            Ok(measurement) => measurement,
            Err(error) => return Err(vicc_child.failure(&error)),
        };
        vicc_child.stop();
        wait_until_empty(&slot1, CARD_WAIT)?;

        // 3. The floor in slot 0, alone: first with the bridge's socket, then acknowledging
        // at once.
        let mut floors = Vec::new();
        let variants: &[(&'static str, &'static str, bool)] = if cfg!(target_os = "linux") {
            &[
                ("floor", "floor: instant 9000", false),
                (
                    "floor_quickack",
                    "floor: instant 9000, immediate ACKs",
                    true,
                ),
            ]
        } else {
            &[("floor", "floor: instant 9000", false)]
        };
        for (key, label, quick_ack) in variants {
            let floor = FloorCard::start(port(0)?, *quick_ack)?;
            let measurement =
                run_card(key, label, &slot0, Some(&FLOOR_ATR), &SELECT_PURSE, seconds);
            let answered = floor.stop()?;
            let measurement = measurement?;
            if answered < measurement.round_trips {
                return Err(format!(
                    "{label}: {} round trips measured but the floor card answered {answered}",
                    measurement.round_trips
                ));
            }
            floors.push(measurement);
            wait_until_empty(&slot0, CARD_WAIT)?;
        }
        // The stack's floor is the faster of the instant cards; the other one, whose socket
        // behaves as the bridge's, shows how much of the gap is the transport.
        let floor = floors
            .iter()
            .min_by_key(|floor| floor.mean())
            .ok_or("no floor measured")?;
        let plain_floor = &floors[0];

        let to_vicc = ratio(&valuecard, &vicc_run);
        let to_floor = ratio(&valuecard, floor);
        let to_plain_floor = ratio(&valuecard, plain_floor);
        const TARGET_VICC: f64 = 1.0;
        const TARGET_FLOOR: f64 = 1.10;
        let mut all = vec![&valuecard, &vicc_run];
        all.extend(floors.iter());
        if args.json {
            let cards: serde_json::Map<String, serde_json::Value> = all
                .iter()
                .map(|m| (m.key.to_owned(), m.to_json()))
                .collect();
            println!(
                "{}",
                json!({
                    "benchmark": "pcsc",
                    "seconds_per_card": seconds,
                    "cards": cards,
                    "valuecard_to_vicc_latency": to_vicc,
                    "target_valuecard_to_vicc": TARGET_VICC,
                    "floor": floor.key,
                    "valuecard_to_floor_latency": to_floor,
                    "target_valuecard_to_floor": TARGET_FLOOR,
                    "valuecard_to_plain_floor_latency": to_plain_floor,
                    "targets_met": to_vicc <= TARGET_VICC && to_floor <= TARGET_FLOOR,
                })
            );
        } else {
            println!(
                "APDU round trips through pcscd and vpcd, one at a time, {seconds} s per card:"
            );
            println!(
                "  {:<38} {:<18} {:>8} {:>9} {:>9} {:>9}",
                "card", "reader", "per s", "mean ms", "median", "p99"
            );
            for m in &all {
                println!(
                    "  {:<38} {:<18} {:>8.1} {:>9.3} {:>9.3} {:>9.3}",
                    m.label,
                    m.reader,
                    m.per_second(),
                    ms(m.mean()),
                    ms(m.quantile(0.5)),
                    ms(m.quantile(0.99))
                );
            }
            let verdict = |value: f64, target: f64| if value <= target { "met" } else { "MISSED" };
            println!(
                "  valuecard / vicc latency:  {to_vicc:.3} (target <= {TARGET_VICC:.2}: {})",
                verdict(to_vicc, TARGET_VICC)
            );
            println!(
                "  valuecard / floor latency: {to_floor:.3} (the faster floor: {}; target <= \
                 {TARGET_FLOOR:.2}: {})",
                floor.label.trim_start_matches("floor: "),
                verdict(to_floor, TARGET_FLOOR)
            );
            if !std::ptr::eq(floor, plain_floor) {
                println!(
                    "  valuecard / floor without immediate ACKs: {to_plain_floor:.3} (its socket \
                     behaves as the bridge's)"
                );
            }
            if to_floor > 2.0 && to_plain_floor < 2.0 {
                println!(
                    "  note: vpcd sends each frame's length and payload as two segments \
                     without TCP_NODELAY; a card that does not acknowledge at once \
                     (TCP_QUICKACK) gets each command only after its delayed ACK (about 40 ms)"
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
