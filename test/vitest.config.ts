import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: 'e2e',
    include: ['**/*.test.ts'],
    globalSetup: ['./setup/global.ts'],
    // demo, pg-*, registry-postgres/resources: PostgreSQL; amqp-*: RabbitMQ; kafka-*: Kafka.
    provide: { services: ['postgres', 'rabbitmq', 'kafka'] },
    testTimeout: 60_000,
    hookTimeout: 120_000,
  },
});
