import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: 'e2e',
    include: ['**/*.test.ts'],
    globalSetup: ['./setup/global.ts'],
    // demo, pg-*, registry-postgres/resources: PostgreSQL; amqp-*: RabbitMQ; kafka-*: Kafka;
    // demo also NATS, Redis, ElasticMQ and MariaDB (its NATS, BullMQ, SQS and MySQL legs);
    // bench-smoke all of them (a smoke run of every benchmark in bench/).
    provide: { services: ['postgres', 'rabbitmq', 'kafka', 'nats', 'redis', 'elasticmq', 'mariadb'] },
    testTimeout: 60_000,
    hookTimeout: 120_000,
  },
});
