//! A tiny HTTP/1.1 server for the emulator's tests, std only, run as PID 1 in a scratch image.
//!
//! It answers every request with JSON naming the service and revision it runs as (`K_SERVICE`,
//! `K_REVISION`), so a test can tell which revision served it; `/status/NNN` answers with that
//! status; `/crash` exits at once with code 4. `MODE=crash` exits at once with code 3 (a revision that never starts);
//! `MODE=silent` never listens (a revision that fails its startup probe).

use std::{
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
    time::Duration,
};

fn main() {
    let mode = std::env::var("MODE").unwrap_or_default();
    match mode.as_str() {
        "crash" => {
            eprintln!("echo-server: crashing on purpose (MODE=crash)");
            std::process::exit(3);
        }
        "silent" => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        _ => {}
    }
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".to_string());
    // An IP literal: a scratch image has no /etc/hosts to resolve names with.
    let listener = TcpListener::bind(format!("0.0.0.0:{port}")).expect("bind");
    println!("echo-server: listening on port {port}");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = serve(stream);
        });
    }
}

fn serve(stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut content_length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; content_length];
        std::io::Read::read_exact(&mut reader, &mut body)?;
        let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
        if path == "/crash" {
            eprintln!("echo-server: crashing on request (/crash)");
            std::process::exit(4);
        }
        let status: u16 = path
            .strip_prefix("/status/")
            .and_then(|code| code.parse().ok())
            .filter(|code| (200..600).contains(code))
            .unwrap_or(200);
        let service = std::env::var("K_SERVICE").unwrap_or_default();
        let revision = std::env::var("K_REVISION").unwrap_or_default();
        let message = std::env::var("MESSAGE").unwrap_or_default();
        let response_body = format!(
            "{{\"service\":\"{service}\",\"revision\":\"{revision}\",\"message\":\"{message}\",\"path\":\"{path}\"}}"
        );
        println!("echo-server: {} -> {status}", request_line.trim_end());
        write!(
            writer,
            "HTTP/1.1 {status} Status\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{response_body}",
            response_body.len()
        )?;
        writer.flush()?;
    }
}
