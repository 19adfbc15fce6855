/**
 * The flags every `net` command shares: where the server is and how to
 * prove who we are. Secrets come from a file or an environment variable,
 * never from the command line alone, where `ps` would show them.
 *
 * @module
 */
import { secondsFlag } from "../core/cli.ts";
import { P2mError, UsageError } from "../core/errors.ts";
import { osReason } from "../core/source.ts";

/** Environment variable holding a token. */
export const TOKEN_ENV = "P2M_NATS_TOKEN";
/** Environment variable holding the password for `--user`. */
export const PASSWORD_ENV = "P2M_NATS_PASSWORD";

/** `parseArgs` options shared by every `net` command. */
export const CONNECTION_OPTIONS = {
  server: { type: "string" },
  bucket: { type: "string" },
  creds: { type: "string" },
  user: { type: "string" },
  "password-file": { type: "string" },
  "token-file": { type: "string" },
  "tls-ca": { type: "string" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  timeout: { type: "string" },
  json: { type: "boolean" },
  quiet: { type: "boolean" },
} as const;

/** Help text for {@linkcode CONNECTION_OPTIONS}. */
export const CONNECTION_USAGE = `
Connection (every command):
  --server URL        NATS server, e.g. nats://127.0.0.1:4222 or tls://host:4222
                      (required; a comma-separated list for a cluster)
  --bucket B          bucket: letters, digits, '_' or '-' (default: default);
                      stored as JetStream stream P2M_<B>
  --creds FILE        NATS credentials file (JWT + nkey seed)
  --user NAME         user name; the password comes from $${PASSWORD_ENV}
                      or --password-file FILE
  --token-file FILE   token in a file (or set $${TOKEN_ENV})
  --tls-ca FILE       CA certificate that signed the server's certificate
  --tls-cert FILE     client certificate, with --tls-key FILE
  --timeout S         seconds to wait for the server, for an answer, and for
                      the next bytes of a transfer (default 10)
  --json              one JSON event per line on stdout
  --quiet             print only errors
  --debug             stack traces on errors
  -h, --help          show this help
`;

/** How to reach and authenticate to the server, checked. */
export interface ConnectionFlags {
  /** Server URLs. */
  servers: string[];
  /** Bucket name (checked by BucketSubjects). */
  bucket: string;
  /** Seconds: connect, request and progress timeout. */
  timeoutSeconds: number;
  /** Credentials file contents. */
  creds?: Uint8Array;
  /** Token. */
  token?: string;
  /** User and password. */
  user?: { name: string; password: string };
  /** TLS files, when any was given. */
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
}

/** Parses {@linkcode CONNECTION_OPTIONS}; throws UsageError or P2mError (unreadable file). */
export function connectionFlags(values: {
  server?: string;
  bucket?: string;
  creds?: string;
  user?: string;
  "password-file"?: string;
  "token-file"?: string;
  "tls-ca"?: string;
  "tls-cert"?: string;
  "tls-key"?: string;
  timeout?: string;
}): ConnectionFlags {
  if (!values.server) throw new UsageError("--server URL is required");
  const servers = values.server.split(",").map((s) => s.trim()).filter((s) => s !== "");
  for (const server of servers) {
    if (!/^((nats|tls):\/\/)?[^\s/]+$/.test(server)) {
      throw new UsageError(`--server must be nats://HOST:PORT or tls://HOST:PORT, not '${server}'`);
    }
  }
  const flags: ConnectionFlags = {
    servers,
    bucket: values.bucket ?? "default",
    timeoutSeconds: secondsFlag(values.timeout, "timeout", 10, { min: 0.1 }),
  };
  const tokenEnv = Deno.env.get(TOKEN_ENV);
  const methods = [values.creds, values.user, values["token-file"] ?? tokenEnv]
    .filter((v) => v !== undefined);
  if (methods.length > 1) {
    throw new UsageError(`use one of --creds, --user, --token-file/$${TOKEN_ENV}`);
  }
  if (values.creds) flags.creds = readSecret(values.creds, "--creds");
  if (values["token-file"]) {
    flags.token = new TextDecoder().decode(readSecret(values["token-file"], "--token-file")).trim();
  } else if (tokenEnv) flags.token = tokenEnv;
  if (values["password-file"] && !values.user) throw new UsageError("--password-file needs --user");
  if (values.user) {
    const password = values["password-file"]
      ? new TextDecoder().decode(readSecret(values["password-file"], "--password-file"))
        .replace(/\r?\n$/, "")
      : Deno.env.get(PASSWORD_ENV);
    if (password === undefined) {
      throw new UsageError(`--user needs a password in $${PASSWORD_ENV} or --password-file`);
    }
    flags.user = { name: values.user, password };
  }
  if (values["tls-cert"] !== undefined && values["tls-key"] === undefined) {
    throw new UsageError("--tls-cert needs --tls-key");
  }
  if (values["tls-key"] !== undefined && values["tls-cert"] === undefined) {
    throw new UsageError("--tls-key needs --tls-cert");
  }
  if (values["tls-ca"] || values["tls-cert"]) {
    for (
      const [flag, path] of [["--tls-ca", values["tls-ca"]], ["--tls-cert", values["tls-cert"]]]
    ) {
      if (path !== undefined) readSecret(path, flag!);
    }
    flags.tls = {
      caFile: values["tls-ca"],
      certFile: values["tls-cert"],
      keyFile: values["tls-key"],
    };
  }
  return flags;
}

function readSecret(path: string, flag: string): Uint8Array {
  try {
    return Deno.readFileSync(path);
  } catch (error) {
    throw new P2mError(`${flag} ${path}: ${osReason(error)}`);
  }
}
