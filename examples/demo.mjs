// Placeholder until the demo issue (#9) lands. It says what the demo will do and does not
// pretend to do it.
console.log(`Branchline demo — not built yet.

When it lands, this command will start an embedded registry, a small shop (gateway on Express,
orders on Fastify with PostgreSQL, payments on gRPC, shipping on Kafka, notifications on
RabbitMQ), create two sandboxes, send traffic with and without their keys, and print which
version served each hop and consumed each message.

Today you can run the test suite (npm test) and the benchmarks (npm run bench).`);
