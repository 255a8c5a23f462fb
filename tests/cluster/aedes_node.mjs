// One node of the test cluster: an aedes MQTT 3.1.1 broker whose sessions, retained
// messages and offline QoS 1 queues live in Redis (aedes-persistence-redis) and whose
// publishes reach the other nodes through Redis pub/sub (mqemitter-redis). A client whose
// node dies reconnects to another node and finds its session there.
//
//   node aedes_node.mjs --id n1 --port 18831 --redis-port 6390
//
// Prints one line per client connect and disconnect ("connect <client id>"), so a test
// knows which node holds a connection.
import net from 'node:net'
import { parseArgs } from 'node:util'
import { Aedes } from 'aedes'
import persistence from 'aedes-persistence-redis'
import mqemitter from 'mqemitter-redis'

const { values } = parseArgs({
  options: {
    id: { type: 'string' },
    port: { type: 'string' },
    'redis-port': { type: 'string' }
  }
})
const redis = { host: '127.0.0.1', port: Number(values['redis-port']) }
const broker = await Aedes.createBroker({
  id: values.id,
  persistence: persistence(redis),
  mq: mqemitter(redis)
})
broker.on('client', (c) => console.log(`connect ${c.id}`))
broker.on('clientDisconnect', (c) => console.log(`disconnect ${c.id}`))
const server = net.createServer(broker.handle)
server.listen(Number(values.port), '127.0.0.1', () => console.log(`listening ${values.port}`))
