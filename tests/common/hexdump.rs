//! Reading a hex dump back into bytes: ours (`tcp_client -x`,
//! `tcp_server -x`) and socat's `-x`, which share a layout (a header per
//! chunk, then its bytes in hex), so tests can compare what each side saw.

/// One chunk of a dump: its direction mark (`>` or `<`), the header's
/// `length`, `from` and `to`, and the bytes its hex lines hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub mark: char,
    pub header: String,
    pub length: u64,
    pub from: u64,
    pub to: u64,
    pub bytes: Vec<u8>,
}

/// The chunks in `text`, skipping every line that is neither a header nor
/// a hex line (log lines, socat's `--` separators). A hex line starts with a
/// space; our dump adds the bytes as text after two spaces, which is cut.
pub fn parse(text: &str) -> Vec<Chunk> {
    let mut chunks: Vec<Chunk> = Vec::new();
    for line in text.lines() {
        let mark = line.chars().next();
        if let Some(mark @ ('>' | '<')) = mark {
            if let Some(chunk) = header(mark, line) {
                chunks.push(chunk);
            }
            continue;
        }
        let Some(chunk) = chunks.last_mut() else {
            continue;
        };
        if !line.starts_with(' ') || (chunk.bytes.len() as u64) >= chunk.length {
            continue;
        }
        let hex = match line[1..].find("  ") {
            Some(end) => &line[1..=end],
            None => &line[1..],
        };
        for pair in hex.split_whitespace() {
            let byte = u8::from_str_radix(pair, 16)
                .unwrap_or_else(|_| panic!("{pair:?} in {line:?} is not a hex byte"));
            chunk.bytes.push(byte);
        }
    }
    chunks
}

fn header(mark: char, line: &str) -> Option<Chunk> {
    let field = |name: &str| -> Option<u64> {
        let start = line.find(&format!("{name}="))? + name.len() + 1;
        let digits: String = line[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    Some(Chunk {
        mark,
        header: line.to_string(),
        length: field("length")?,
        from: field("from")?,
        to: field("to")?,
        bytes: Vec::new(),
    })
}

/// Everything that went one way (`mark`), in order, after checking that
/// each chunk's header agrees with its bytes and with the chunk before.
pub fn one_way(chunks: &[Chunk], mark: char) -> Vec<u8> {
    let mut all = Vec::new();
    for chunk in chunks.iter().filter(|chunk| chunk.mark == mark) {
        assert_eq!(chunk.bytes.len() as u64, chunk.length, "{chunk:?}");
        assert_eq!(chunk.from, all.len() as u64, "{chunk:?}");
        assert_eq!(chunk.to, chunk.from + chunk.length - 1, "{chunk:?}");
        all.extend_from_slice(&chunk.bytes);
    }
    all
}
