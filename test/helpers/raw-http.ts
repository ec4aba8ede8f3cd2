// Raw HTTP/1.1 over node:net, for requests no HTTP client would send (malformed, trickled).
import net from "node:net";

/** Sends bytes on a fresh connection and reads until the router closes it (or a deadline). */
export async function rawExchange(port: number, request: string | Buffer, timeoutMs = 5000): Promise<string> {
  return await new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    let answer = "";
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no close after ${timeoutMs} ms; got ${JSON.stringify(answer)}`));
    }, timeoutMs);
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => (answer += chunk));
    socket.on("error", () => undefined);
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(answer);
    });
    socket.write(request);
  });
}

export interface RawAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export function parseAnswer(text: string): RawAnswer {
  const end = text.indexOf("\r\n\r\n");
  const [statusLine, ...lines] = text.slice(0, end).split("\r\n");
  const headers = Object.fromEntries(lines.map((line) => [line.slice(0, line.indexOf(":")).toLowerCase(), line.slice(line.indexOf(":") + 1).trim()]));
  return { status: Number(statusLine!.split(" ")[1]), headers, body: text.slice(end + 4) };
}
