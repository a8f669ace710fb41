// Starts the Node reference Durable Streams server for bench/compare.sh, file-backed (append-only
// segment files and LMDB metadata under the data directory), and keeps it running until SIGTERM
// or SIGINT. Usage: node server.mjs PORT DATA_DIR [HOST]
import { DurableStreamTestServer } from "@durable-streams/server"

const [port, dataDir, host = "127.0.0.1"] = process.argv.slice(2)
if (!port || !dataDir) {
  console.error("usage: node server.mjs PORT DATA_DIR [HOST]")
  process.exit(2)
}

const server = new DurableStreamTestServer({ port: Number(port), host, dataDir })
const url = await server.start()
console.log(`durable streams reference server on ${url}, data in ${dataDir}`)

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, async () => {
    await server.stop()
    process.exit(0)
  })
}
