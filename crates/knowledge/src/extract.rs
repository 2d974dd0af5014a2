//! Text from a document's bytes, by its file type: plain text and Markdown as they are,
//! HTML without its markup, CSV as one line per row naming each column, PDF's text layer.
//! Anything else (or text that is not UTF-8) is refused, so binary files never reach the
//! index.

use crate::KnowledgeError;

/// The kinds of file a data source's documents may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentType {
    Text,
    Markdown,
    Html,
    Csv,
    Pdf,
}

impl DocumentType {
    /// The type a file name's extension says, if it is one this crate reads.
    pub fn of_name(name: &str) -> Option<Self> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "txt" | "text" => Some(Self::Text),
            "md" | "markdown" => Some(Self::Markdown),
            "html" | "htm" => Some(Self::Html),
            "csv" => Some(Self::Csv),
            "pdf" => Some(Self::Pdf),
            _ => None,
        }
    }
}

/// The text of a document.
pub fn extract(kind: DocumentType, bytes: &[u8]) -> Result<String, KnowledgeError> {
    if kind == DocumentType::Pdf {
        return pdf_text(bytes);
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| KnowledgeError::Unreadable("the file is not UTF-8 text".into()))?;
    if text.contains('\0') {
        return Err(KnowledgeError::Unreadable(
            "the file holds NUL bytes: not a text file".into(),
        ));
    }
    Ok(match kind {
        DocumentType::Text | DocumentType::Markdown | DocumentType::Pdf => text.to_string(),
        DocumentType::Html => html_text(text),
        DocumentType::Csv => csv_text(text),
    })
}

/// A PDF's text layer (scanned pages without one yield nothing). The parser is a third
/// party's and PDFs come from users: a panic inside it is caught and reported as an
/// unreadable document, never allowed to take the ingestion down.
fn pdf_text(bytes: &[u8]) -> Result<String, KnowledgeError> {
    if !bytes.starts_with(b"%PDF-") {
        return Err(KnowledgeError::Unreadable("not a PDF file".into()));
    }
    let parsed = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem(bytes));
    let text = match parsed {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => {
            return Err(KnowledgeError::Unreadable(format!(
                "the PDF does not parse: {e}"
            )))
        }
        Err(_) => {
            return Err(KnowledgeError::Unreadable(
                "the PDF does not parse (its parser gave up)".into(),
            ))
        }
    };
    let text = fold_space(&text);
    if text.is_empty() {
        return Err(KnowledgeError::Unreadable(
            "the PDF has no text layer (a scan needs OCR first)".into(),
        ));
    }
    Ok(text)
}

/// HTML's visible text: tags dropped (block-level ones end a line), `script` and `style`
/// contents skipped, the common character references decoded, runs of blank space folded.
fn html_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        push_decoded(&mut out, &rest[..open]);
        rest = &rest[open..];
        let Some(close) = rest.find('>') else {
            rest = "";
            break;
        };
        let closing = rest[1..close].starts_with('/');
        let tag = rest[1..close].trim_start_matches('/').to_ascii_lowercase();
        let name: String = tag
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '!')
            .collect();
        rest = &rest[close + 1..];
        if tag.starts_with("!--") {
            // A comment runs to `-->`, which may lie past the first `>`.
            let comment_end = rest.find("-->").map_or(rest.len(), |i| i + 3);
            if !tag.ends_with("--") {
                rest = &rest[comment_end..];
            }
            continue;
        }
        if !closing && (name == "script" || name == "style") {
            let end = format!("</{name}");
            let lower = rest.to_ascii_lowercase();
            rest = match lower.find(&end) {
                Some(i) => &rest[i..],
                None => "",
            };
            continue;
        }
        if BLOCK_TAGS.contains(&name.as_str()) {
            out.push('\n');
        }
    }
    push_decoded(&mut out, rest);
    fold_space(&out)
}

const BLOCK_TAGS: &[&str] = &[
    "p",
    "div",
    "br",
    "li",
    "ul",
    "ol",
    "tr",
    "table",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "pre",
    "section",
    "article",
    "header",
    "footer",
    "blockquote",
    "dt",
    "dd",
    "title",
];

fn push_decoded(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let end = rest[..rest.len().min(12)].find(';');
        let decoded = end.and_then(|e| decode_entity(&rest[1..e]).map(|c| (c, e)));
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &rest[e + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
}

fn decode_entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some(' '),
        _ => {
            let code = name.strip_prefix('#')?;
            let n = match code.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => code.parse().ok()?,
            };
            char::from_u32(n)
        }
    }
}

/// Spaces and tabs folded to one, lines trimmed, at most one blank line in a row.
fn fold_space(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        let folded = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if folded.is_empty() {
            blank += 1;
            if blank > 1 || out.is_empty() {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(&folded);
        out.push('\n');
    }
    out.trim_end().to_string()
}

/// One line per row: `column: value` pairs, so each chunk of rows keeps its meaning.
fn csv_text(text: &str) -> String {
    let mut rows = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(csv_fields);
    let Some(header) = rows.next() else {
        return String::new();
    };
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, v)| match header.get(i) {
                Some(h) => format!("{h}: {v}"),
                None => v.clone(),
            })
            .collect();
        out.push_str(&line.join(", "));
        out.push('\n');
    }
    out
}

/// A CSV line's fields, with double-quoted fields (and `""` inside them) unquoted.
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field).trim().to_string()),
            _ => field.push(c),
        }
    }
    fields.push(field.trim().to_string());
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_keeps_the_visible_text() {
        let html = "<html><head><title>T</title><style>p{color:red}</style>\
                    <script>var a = '<p>';</script></head><body><!-- hidden -->\
                    <h1>Tea &amp; coffee</h1><p>Brew at 90&#176;C,\n   not   more.</p>\
                    <ul><li>one</li><li>two&nbsp;x</li></ul></body></html>";
        let text = extract(DocumentType::Html, html.as_bytes()).unwrap();
        // Blocks are paragraphs: one blank line between them, none more.
        assert_eq!(
            text,
            "T\n\nTea & coffee\n\nBrew at 90\u{b0}C,\nnot more.\n\none\n\ntwo x"
        );
    }

    #[test]
    fn csv_rows_name_their_columns() {
        let csv = "name,role\n\"Ada, Countess\",\"says \"\"hi\"\"\"\nAlan,mathematician\n";
        let text = extract(DocumentType::Csv, csv.as_bytes()).unwrap();
        assert_eq!(
            text,
            "name: Ada, Countess, role: says \"hi\"\nname: Alan, role: mathematician\n"
        );
    }

    /// A one-page PDF with `text` in Helvetica, its cross-reference table's offsets
    /// computed as a writer would.
    fn pdf_with(text: &str) -> Vec<u8> {
        let stream = format!("BT /F1 12 Tf 72 712 Td ({text}) Tj ET");
        let objects = [
            "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
            "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
             /Resources << /Font << /F1 5 0 R >> >> >>"
                .to_string(),
            format!(
                "<< /Length {} >>\nstream\n{stream}\nendstream",
                stream.len()
            ),
            "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
        ];
        let mut pdf = b"%PDF-1.4\n".to_vec();
        let mut offsets = Vec::new();
        for (i, body) in objects.iter().enumerate() {
            offsets.push(pdf.len());
            pdf.extend(format!("{} 0 obj\n{body}\nendobj\n", i + 1).bytes());
        }
        let xref = pdf.len();
        pdf.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).bytes());
        for o in offsets {
            pdf.extend(format!("{o:010} 00000 n \n").bytes());
        }
        pdf.extend(
            format!(
                "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
                objects.len() + 1
            )
            .bytes(),
        );
        pdf
    }

    #[test]
    fn a_pdfs_text_layer_is_read_and_broken_pdfs_are_refused() {
        let pdf = pdf_with("Basalt reads PDF files");
        assert_eq!(DocumentType::of_name("manual.PDF"), Some(DocumentType::Pdf));
        let text = extract(DocumentType::Pdf, &pdf).unwrap();
        assert!(text.contains("Basalt reads PDF files"), "{text:?}");
        // Truncated, corrupted, or not a PDF at all: an error, never a panic.
        for bad in [&pdf[..pdf.len() / 2], b"%PDF-1.4 garbage", b"hello"] {
            assert!(extract(DocumentType::Pdf, bad).is_err());
        }
        let mut flipped = pdf.clone();
        for b in flipped.iter_mut().skip(20).step_by(7) {
            *b ^= 0x5a;
        }
        let _ = extract(DocumentType::Pdf, &flipped);
    }

    #[test]
    fn binary_and_unknown_files_are_refused() {
        assert!(extract(DocumentType::Text, &[0xff, 0xfe, 0x00]).is_err());
        assert!(extract(DocumentType::Text, b"a\0b").is_err());
        assert_eq!(DocumentType::of_name("a.docx"), None);
        assert_eq!(
            DocumentType::of_name("notes.MD"),
            Some(DocumentType::Markdown)
        );
        assert_eq!(DocumentType::of_name("README"), None);
    }
}
